"""The demo's run: model, platform, catalogue, A/B check, "ready", wait for Ctrl-C, stop."""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import replace

from pydantic import ValidationError

from ..registry import ServiceSpec
from ..settings import LocalStackSettings
from ..supervisor import Supervisor
from .catalogue import catalogue, index_catalogue
from .checks import check_experiment, ensure_model, first_experiment, probe_users
from .settings import DemoError, DemoSettings

REQUIRED = ("embedder", "ingest", "recommender", "abmetrics")


def ready_block(sup: Supervisor, n: int, card: dict, exp, users: dict[str, str], seed: str) -> str:
    url = {spec.name: spec.url for spec in sup.services}
    rec, ab = url["recommender"], url["abmetrics"]
    split = " / ".join(f"{v.name} {v.weight:g}" for v in exp.variants)
    checked = ", ".join(f"{u} -> {v}" for v, u in users.items())
    return (f"ready: {n} listings searchable (model {card.get('name')} {card.get('version')}); "
            f"A/B experiment {exp.id} running ({split}; checked {checked})\n{sup.table()}\n"
            f"  demo page      {rec}/demo\n"
            f"  API docs       {rec}/docs\n"
            f"  similar items  {rec}/v1/listings/{seed}/similar?k=12&user_id=u1\n"
            f"  A/B dashboard  {ab}/experiments/{exp.id}\n"
            f"  A/B report     {ab}/v1/experiments/{exp.id}/report\n"
            f"  metrics        {rec}/metrics  {ab}/metrics  {url['ingest']}/metrics  {url['embedder']}/metrics\n"
            "Ctrl-C to stop.")


def pin_model_version(specs: list[ServiceSpec], version: str) -> list[ServiceSpec]:
    """The specs with the ingest worker writing `version` (the artifact's, checks.model_version) into its
    rows instead of the card's bare version: what index_catalogue counts as searchable."""
    def pinned(spec: ServiceSpec) -> ServiceSpec:
        env_fn = spec.env_fn
        return replace(spec, env_fn=lambda: {**(env_fn() if env_fn else {}), "ADREC_INGEST__MODEL_VERSION": version})

    return [pinned(spec) if spec.name == "ingest" else spec for spec in specs]


def run(s: DemoSettings, local: LocalStackSettings, echo) -> int:
    card = ensure_model(s, echo)
    config, exp = first_experiment()
    users = probe_users(config, exp, s.probe_users)
    events = catalogue(s)
    sup = Supervisor(local, echo=echo)
    sup.services = pin_model_version(sup.services, card["artifact_version"])
    echo(f"adrec demo (run dir {local.run_dir})")
    try:
        sup.up()
    except Exception as exc:  # noqa: BLE001 - up() stopped what it had started
        print(f"failed to start: {exc}", file=sys.stderr, flush=True)
        return 1
    reason = "error"
    try:
        missing = [n for n in REQUIRED if n not in {r.name for r in sup.running}]
        if missing:
            raise DemoError(f"not started: {', '.join(missing)} (see the lines above)")
        dead = index_catalogue(sup, events, card, s, echo)
        if dead:
            echo(f"warning: {len(dead)} listing(s) were dead-lettered (topic listings.dlq), e.g. {dead[0]}")
        seed = next(e.id for e in events if e.id not in set(dead))
        url = {spec.name: spec.url for spec in sup.services}
        check_experiment(url["recommender"], url["abmetrics"], seed, exp, users)
        echo(ready_block(sup, len(events) - len(dead), card, exp, users, seed))
        reason = sup.wait()
    except KeyboardInterrupt:
        reason = "signal"
    except DemoError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
    finally:
        echo(f"stopping ({reason}) ...")
        sup.down()
        echo("stopped.")
    return 0 if reason == "signal" else 1


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # before "ready", Ctrl-C and SIGTERM stop what was started (even if inherited ignored)


def main(argv: list[str] | None = None) -> int:
    from services.ingest.catalogue import DATASETS

    p = argparse.ArgumentParser(prog="python -m services.localstack.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", action="append", choices=sorted(DATASETS),
                   help="dataset(s) to publish (default: fashion-products)")
    p.add_argument("--limit", type=int, help="publish at most N listings per dataset (default: all)")
    p.add_argument("--no-train", action="store_true", help="fail instead of training when no model is exported")
    p.add_argument("--fresh", action="store_true", help="wipe the run directory first (re-index everything)")
    p.add_argument("--index-timeout", type=float, help="seconds to wait for indexing (default 1800)")
    args = p.parse_args(argv)
    given = {"datasets": args.dataset, "limit": args.limit, "index_timeout_s": args.index_timeout,
             "train": False if args.no_train else None}
    try:
        settings = DemoSettings(**{k: v for k, v in given.items() if v is not None})
        local = LocalStackSettings(fresh=True) if args.fresh else LocalStackSettings()
    except ValidationError as exc:
        p.error("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    old = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return run(settings, local, lambda m: print(m, flush=True))
    except DemoError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("interrupted.", flush=True)
        return 130
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
