import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from services.rewards.base import ScoringBatch
from services.rewards.encoder import default_encoder_path
from services.rewards.registry import build_reward

CONTEXTS = [["Hello", "Hi, how are you?"], ["What is AI?"], ["Tell me a joke"]]
RESPONSES = ["I am fine, thanks for asking.", "Artificial intelligence.", "No."]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random BERT classifier with 3 labels and the MiniLM tokenizer, saved like any hub model."""
    path = tmp_path_factory.mktemp("tiny_rm")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, num_labels=3,
    )  # fmt: skip
    BertForSequenceClassification(config).eval().save_pretrained(path)
    AutoTokenizer.from_pretrained(default_encoder_path()).save_pretrained(path)
    return path


def _batch():
    n = len(RESPONSES)
    return ScoringBatch(contexts=CONTEXTS, responses=RESPONSES, references=[None] * n, labels=[None] * n)


def _direct_logits(model_dir, pair: bool) -> torch.Tensor:
    """One unpadded forward per example: checks the reward's batching, padding and pairing."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = BertForSequenceClassification.from_pretrained(model_dir).eval()
    rows = []
    with torch.no_grad():
        for context, response in zip(CONTEXTS, RESPONSES):
            texts = ("\n".join(context), response) if pair else (response,)
            rows.append(model(**tokenizer(*texts, return_tensors="pt")).logits[0])
    return torch.stack(rows)


def test_pair_logits_match_direct_forward(model_dir):
    reward = build_reward("hf_model", {"path": str(model_dir), "label_index": 2, "batch_size": 2})
    expected = _direct_logits(model_dir, pair=True)[:, 2]
    assert reward.score(_batch()) == pytest.approx(expected.tolist(), abs=1e-5)


def test_response_probabilities_match_direct_forward(model_dir):
    reward = build_reward("hf_model", {"path": str(model_dir), "input": "response", "output": "prob"})
    expected = torch.softmax(_direct_logits(model_dir, pair=False), dim=1)[:, 0]
    scores = reward.score(_batch())
    assert scores == pytest.approx(expected.tolist(), abs=1e-6)
    assert all(0.0 < s < 1.0 for s in scores)


def test_label_index_out_of_range(model_dir):
    with pytest.raises(ValueError, match="label_index 3 is out of range; .* has 3 output label"):
        build_reward("hf_model", {"path": str(model_dir), "label_index": 3})
