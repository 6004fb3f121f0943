"""`crlhf`: command line for a running crlhf run's control plane.

    crlhf status                               run state, iteration, throughput, last eval
    crlhf constraints                          thresholds, directions, current values, multipliers/weights
    crlhf constraints set meteor 0.25          new threshold (and/or --direction ge|le|eq)
    crlhf objective                            hyperparameters in effect and queued
    crlhf objective set multiplier_lr=0.05     patch hyperparameters (values parsed as JSON, else YAML)
    crlhf pause | resume | checkpoint | stop
    crlhf audit [--limit N]                    every change: when, who, old → new, from which iteration
    crlhf nelder-mead                          Nelder–Mead simplex and history (nm_ppo)
    crlhf report [RUN_DIR]                     per-reward summary + report.png, from the run's files (no server)

The run is found from --run-dir / --url, else CRLHF_RUN_DIR / CRLHF_URL, else the newest run with a
control.json under run.root's default ($CRLHF_RUNS, else ./runs) or ~/crlhf-runs. When its control plane
does not answer (the run ended), status, constraints and audit read the run directory's files instead
(metrics.jsonl, config.yaml, audit.jsonl) and say so on stderr. The token comes from CRLHF_CONTROL_TOKEN or the run directory's control.token. Changes apply
from the next iteration boundary; the output says which iteration. Exit codes: 0 ok, 1 the server refused
or failed, 2 the run could not be found or reached.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from rich import box
from rich.console import Console
from rich.table import Table

from clients import files
from clients.client import ControlClient, ControlError, discover
from services.control import schemas

out = Console(highlight=False)


def _num(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _value(text: str) -> Any:
    """`0.05` → 0.05, `true` → True, `null` → None, `[a, b]` → list, anything else → the string."""
    try:
        return json.loads(text)
    except ValueError:
        return yaml.safe_load(text)


# --- renderers ---------------------------------------------------------------------------------------
def show_status(s: schemas.Status) -> None:
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    running = f" (iteration {s.running_iteration} in progress)" if s.running_iteration is not None else ""
    rows = [
        ("objective", s.objective),
        ("state", s.state),
        ("iteration", f"{s.iteration}{running}"),
        ("changes apply from", str(s.next_iteration)),
        ("pending changes", str(s.pending_changes)),
        ("tokens/s", _num(s.throughput.tokens_per_second)),
        ("s/iteration", _num(s.throughput.seconds_per_iteration)),
        ("checkpoint requested", "yes" if s.checkpoint_requested else "no"),
        ("last eval", "—" if s.last_eval is None else f"iteration {s.last_eval.iteration}: "
         + ", ".join(f"{k.removeprefix('eval/')}={_num(v)}" for k, v in s.last_eval.metrics.items())),
        ("audit entries", str(s.audit_entries)),
    ]
    for key, value in rows:
        t.add_row(key, value)
    out.print(t)


def show_constraints(items: list[schemas.Constraint]) -> None:
    t = Table(box=box.SIMPLE_HEAD)
    t.add_column("reward", no_wrap=True)
    for col in ("θ", "dir", "current", "violation", "multiplier", "weight"):
        t.add_column(col, justify="left" if col == "dir" else "right", no_wrap=True)
    t.add_column("queued", no_wrap=True)
    for c in items:
        queued = ""
        if c.pending is not None:
            parts = [f"θ={_num(c.pending.threshold)}" if c.pending.threshold is not None else "",
                     f"dir={c.pending.direction}" if c.pending.direction else ""]
            queued = " ".join(p for p in parts if p) + f" @{c.pending.applies_from}"
        t.add_row(c.name, _num(c.threshold), c.direction or "—", _num(c.current), _num(c.violation),
                  _num(c.multiplier), _num(c.weight), queued)
    out.print(t)


def show_objective(o: schemas.ObjectiveView) -> None:
    t = Table(title=f"objective {o.name}", box=box.SIMPLE_HEAD)
    t.add_column("hyperparameter", no_wrap=True)
    t.add_column("value", no_wrap=True)
    t.add_column("queued", no_wrap=True)
    t.add_column("note")
    for key, value in o.hyperparameters.items():
        if key == "name":
            continue
        pending = json.dumps(o.pending[key]) if key in o.pending else ""
        note = f"fixed: {o.frozen[key]}" if key in o.frozen else o.descriptions.get(key, "")
        t.add_row(key, json.dumps(value), pending, note)
    out.print(t)
    if o.applies_from is not None:
        out.print(f"pending values apply from iteration {o.applies_from}")


def show_changes(applies_from: int, changes: list[schemas.AuditEntry]) -> None:
    for c in changes:
        out.print(f"{c.target}: {json.dumps(c.old)} → {json.dumps(c.new)}")
    out.print(f"applies from iteration {applies_from}")


def show_audit(entries: list[schemas.AuditEntry]) -> None:
    t = Table(box=box.SIMPLE_HEAD)
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("time", no_wrap=True)
    t.add_column("who", no_wrap=True)
    t.add_column("change", no_wrap=True)
    t.add_column("old → new", no_wrap=True)
    t.add_column("from", justify="right", no_wrap=True)
    today = time.strftime("%Y-%m-%d")
    for e in entries:
        day = time.strftime("%Y-%m-%d", time.localtime(e.time))
        when = time.strftime("%H:%M:%S" if day == today else "%Y-%m-%d %H:%M:%S", time.localtime(e.time))
        t.add_row(str(e.seq), when, e.who, e.target, f"{json.dumps(e.old)} → {json.dumps(e.new)}", str(e.applies_from))
    out.print(t)


def show_nelder_mead(nm: schemas.NelderMeadView) -> None:
    out.print(f"phase {nm.phase}, NM iteration {nm.iteration}, {nm.total_iterations} PPO iterations spent")
    if nm.target is not None:
        out.print(f"training towards θ = {[round(v, 4) for v in nm.target]}" + (" (converged)" if nm.converged else ""))
    if nm.best is not None:
        out.print(f"best θ = {[round(v, 4) for v in nm.best.thresholds]}  f = {nm.best.f:.4g}")
    t = Table(title="history", box=box.SIMPLE_HEAD)
    for col in ("θ", "f", "iterations", "cached", "phase"):
        t.add_column(col)
    for h in nm.history:
        t.add_row(str([round(v, 4) for v in h.get("thresholds", [])]), _num(h.get("f")), str(h.get("iterations")),
                  str(h.get("cached")), str(h.get("phase")))
    out.print(t)


# --- commands ---------------------------------------------------------------------------------------
def run(args: argparse.Namespace, client: ControlClient) -> None:
    as_json = args.json

    def emit(model: Any, render) -> None:
        if as_json:
            data = [m.model_dump(mode="json") for m in model] if isinstance(model, list) else model.model_dump(mode="json")
            out.print_json(json.dumps(data))
        else:
            render(model)

    cmd = args.command
    if cmd == "status":
        emit(client.status(), show_status)
    elif cmd == "health":
        emit(client.health(), lambda h: out.print(f"ok, iteration {h.iteration}"))
    elif cmd == "constraints" and args.action == "set":
        if args.value is None and args.direction is None:
            raise ControlError("give a threshold value, --direction, or both (e.g. crlhf constraints set meteor 0.25)")
        threshold = None if args.value is None else _value(args.value)
        result = client.set_constraint(args.name, threshold, args.direction)
        emit(result, lambda r: show_changes(r.applies_from, r.changes))
    elif cmd == "constraints":
        emit(client.constraints(), show_constraints)
    elif cmd == "objective" and args.action == "set":
        values = {}
        for pair in args.pairs:
            key, sep, raw = pair.partition("=")
            if not sep or not key:
                raise ControlError(f"expected KEY=VALUE, got '{pair}'")
            values[key.strip()] = _value(raw)
        result = client.patch_objective(values)
        emit(result, lambda r: show_changes(r.applies_from, r.changes))
    elif cmd == "objective":
        emit(client.objective(), show_objective)
    elif cmd in ("pause", "resume", "checkpoint", "stop"):
        result = getattr(client, cmd)()
        verb = {"pause": "pause", "resume": "resume", "checkpoint": "checkpoint", "stop": "stop"}[cmd]
        emit(result, lambda r: out.print(
            f"{verb}: requested; the driver acts at the boundary before iteration {r.applies_from}"
            if r.changed else f"{verb}: nothing to do (already {'paused' if r.controls.paused else 'requested' if cmd != 'resume' else 'running'})"
        ))
    elif cmd == "audit":
        emit(client.audit(args.since, args.limit), show_audit)
    elif cmd == "nelder-mead":
        emit(client.nelder_mead(), show_nelder_mead)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crlhf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", help="run directory (reads control.json and control.token)")
    p.add_argument("--url", help="control plane URL, e.g. http://127.0.0.1:8321")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("status", help="run state, iteration, throughput, last eval")
    sub.add_parser("health", help="is the control plane up")
    cons = sub.add_parser("constraints", help="list constraints; 'constraints set NAME VALUE' changes one")
    cons_sub = cons.add_subparsers(dest="action")
    cset = cons_sub.add_parser("set", help="new threshold and/or direction")
    cset.add_argument("name")
    cset.add_argument("value", nargs="?")
    cset.add_argument("--direction", choices=["ge", "le", "eq"])
    obj = sub.add_parser("objective", help="hyperparameters; 'objective set KEY=VALUE ...' patches them")
    obj_sub = obj.add_subparsers(dest="action")
    oset = obj_sub.add_parser("set", help="patch hyperparameters")
    oset.add_argument("pairs", nargs="+", metavar="KEY=VALUE")
    for action, text in (("pause", "pause at the next iteration boundary"), ("resume", "resume a paused run"),
                         ("checkpoint", "checkpoint at the next iteration boundary"), ("stop", "checkpoint and end the run")):
        sub.add_parser(action, help=text)
    audit = sub.add_parser("audit", help="the audit log")
    audit.add_argument("--since", type=int, default=0, help="first sequence number")
    audit.add_argument("--limit", type=int, default=None, help="only the last N entries")
    sub.add_parser("nelder-mead", help="Nelder–Mead state and history (nm_ppo)")
    rep = sub.add_parser("report", help="summary table and report.png of a finished or live run (reads its files)")
    rep.add_argument("directory", nargs="?", help="run directory (default: --run-dir, CRLHF_RUN_DIR or the newest run under $CRLHF_RUNS / ./runs / ~/crlhf-runs)")
    return p


def report(directory: str | None) -> int:
    """Reads metrics.jsonl and config.yaml only, so it works after the run (and its server) ended."""
    from services.run import report as run_report

    try:
        chosen = files.find_run(directory, "metrics.jsonl")
        summary, picture = run_report.write(chosen)
    except (files.NoRun, FileNotFoundError) as err:
        print(f"crlhf: {err}", file=sys.stderr)
        return 2
    out.print(summary)
    out.print(f"report: {picture}")
    return 0


FROM_FILES = ("status", "constraints", "audit")  # commands a finished run's files can answer


def from_files(args: argparse.Namespace, run_dir: Path, reason: str) -> int:
    """status / constraints / audit from the run directory, when its control plane does not answer."""
    try:
        if args.command == "audit":
            shown: Any = files.audit(run_dir, args.since, args.limit)
            render = show_audit
        elif args.command == "constraints":
            shown, render = files.constraints(run_dir), show_constraints
        else:
            shown, render = files.status(run_dir), show_status
    except files.NoRun as err:
        print(f"crlhf: {reason}; and {err}", file=sys.stderr)
        return 2
    planned = files.planned_iterations(run_dir)
    last = shown.iteration if isinstance(shown, schemas.Status) else None
    progress = f", last iteration {last} of {planned} planned" if last is not None and planned else ""
    # stderr: --json output stays machine-readable
    print(f"crlhf: {reason}; read from the run's files in {run_dir} (the run is not serving{progress})", file=sys.stderr)
    if args.json:
        data = [m.model_dump(mode="json") for m in shown] if isinstance(shown, list) else shown.model_dump(mode="json")
        out.print_json(json.dumps(data))
    else:
        render(shown)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "report":
        return report(args.directory or args.run_dir)
    readable = args.command in FROM_FILES and getattr(args, "action", None) is None and args.url is None
    try:
        target = discover(args.run_dir, args.url)
    except ControlError as e:
        run_dir = _run_with_files(args.run_dir) if readable else None
        if run_dir is not None:  # e.g. control.enabled=false: no control.json, but metrics.jsonl
            return from_files(args, run_dir, str(e))
        print(f"crlhf: {e}", file=sys.stderr)
        return 2
    try:
        with ControlClient(target.url, target.token, timeout=args.timeout) as client:
            run(args, client)
    except ControlError as e:
        if e.status is None and readable and target.run_dir is not None:
            return from_files(args, target.run_dir, str(e))
        print(f"crlhf: {e}", file=sys.stderr)
        return 2 if e.status is None else 1
    return 0


def _run_with_files(run_dir: str | None) -> Path | None:
    try:
        found = files.find_run(run_dir, "metrics.jsonl")
    except files.NoRun:
        return None
    return found if (found / "metrics.jsonl").exists() or (found / "audit.jsonl").exists() else None


if __name__ == "__main__":
    sys.exit(main())
