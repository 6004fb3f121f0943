import pytest

from services.rewards import wordnet


def test_installs_real_copies_and_lexnames(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))  # undo the insertion after the test
    monkeypatch.setenv("CRLHF_CACHE", str(tmp_path))
    target = wordnet.ensure_wordnet()
    assert target == tmp_path / "nltk_data" / "corpora" / "wordnet"
    for name in wordnet.REQUIRED_FILES:
        path = target / name
        assert path.is_file() and not path.is_symlink()
        assert path.stat().st_size == (wordnet.DEBIAN_WORDNET_DIR / name).stat().st_size
    lines = (target / "lexnames").read_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3"
    assert lines[3] == "03\tnoun.Tops\t1"
    assert lines[29] == "29\tverb.body\t2"
    assert lines[44] == "44\tadj.ppl\t3"

    assert str(tmp_path / "nltk_data") in nltk.data.path
    mtime = (target / "data.noun").stat().st_mtime_ns
    assert wordnet.ensure_wordnet() == target  # idempotent: no second copy
    assert (target / "data.noun").stat().st_mtime_ns == mtime


def test_missing_debian_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("CRLHF_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base wordnet-sense-index"):
        wordnet.ensure_wordnet(source=tmp_path / "empty")
