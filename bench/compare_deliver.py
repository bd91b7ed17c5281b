"""Small-file deliveries of two versions of levere, side by side on the same disk, beside rsync.

    .venv/bin/python bench/compare_deliver.py --against REV [--files 20000] [--rounds 6] [--path DIR]

The disk's speed at creating files moves a lot from one minute to the next (see
docs/benchmarks.md), so a change is measured against the code of ``REV`` (a commit, a tag) in
the same run: each round copies the run folder with `rsync -a`, then delivers it with both
versions (client and service), in alternating order. ``REV`` is checked out in a temporary
worktree and runs from there (``PYTHONPATH``) with this checkout's virtual environment, so it
must need no other dependencies and have the same database migrations. Prints each round's
seconds and the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import LEVERE, Service, levere_service, run_timed, scratch, settle_disk

ROOT = Path(__file__).resolve().parent.parent


def worktree(stack: ExitStack, rev: str) -> Path:
    """``rev`` checked out in a temporary folder, removed at the end."""
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="levere-rev-"))) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), rev], check=True)
    stack.callback(
        subprocess.run, ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)], check=False
    )
    # as this checkout's (scripts/run-bench.sh), its modules start from bytecode
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(folder / "src")], check=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--against", required=True, help="the commit to compare this checkout with")
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--path", action="append", default=[],
        help="a folder put before REV's own on its PYTHONPATH (say, other versions of its dependencies)",
    )  # fmt: skip
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src")], check=True)
    with ExitStack() as stack:
        other = {"PYTHONPATH": os.pathsep.join([*args.path, str(worktree(stack, args.against) / "src")])}
        work = stack.enter_context(scratch("compare"))
        run = work / "run-small"
        for i in range(args.files):
            folder = run / f"lane{i % 8}"
            if i < 8:
                folder.mkdir(parents=True)
            (folder / f"read_{i:06d}.txt").write_bytes(i.to_bytes(8, "little") * 512)
        quiet = {"LEVERE_EMBEDDED_WORKER": "false"}
        services: dict[str, tuple[Service, dict[str, str]]] = {
            args.against: (stack.enter_context(levere_service(work / "before", quiet | other)), other),
            "this checkout": (stack.enter_context(levere_service(work / "after", quiet)), {}),
        }
        seconds: dict[str, list[float]] = {"rsync -a": [], **{name: [] for name in services}}
        for r in range(args.rounds):
            settle_disk()
            seconds["rsync -a"].append(run_timed(["rsync", "-a", f"{run}/", f"{work}/rsync-{r}/"]).seconds)
            names = list(services) if r % 2 == 0 else list(reversed(services))
            for name in names:
                service, extra = services[name]
                project = service.project()
                env = service.cli_env(service.staff_token) | extra
                settle_disk()
                cmd = [LEVERE, "deliver", project, str(run), "--name", f"round-{r}"]
                seconds[name].append(run_timed(cmd, env=env).seconds)
            print(
                f"round {r + 1}: "
                + ", ".join(f"{name} {values[-1]:.2f} s" for name, values in seconds.items()),
                flush=True,
            )
        rsync = seconds["rsync -a"]
        for name, values in seconds.items():
            ratio = statistics.median(a / b for a, b in zip(rsync, values, strict=True))
            print(f"{name}: median {statistics.median(values):.2f} s, median ratio to rsync -a {ratio:.2f}")


if __name__ == "__main__":
    main()
