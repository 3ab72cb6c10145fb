"""Reading checkpoints back in tests."""
from pathlib import Path

from mpips.checkpoint import manifest
from mpips.checkpoint.layout import complete_steps, server_file
from mpips.checkpoint.shardfile import ServerFile
from mpips.checkpoint.whole import read_tables


def final_state(run_dir: Path) -> dict:
    """Every table dataset and the versions in the final checkpoint of a run (its newest),
    keyed ``SERVER/DATASET``; the files' checksums are verified on the way."""
    step = complete_steps(run_dir)[0]
    doc = manifest.load(step)
    assert doc["final"]
    out = {}
    for entry in doc["servers"]:
        with ServerFile(step / server_file(entry["index"]), entry) as f:
            for name in entry["datasets"]:
                if name.startswith("tables/") or name == "versions":
                    out[f"{entry['index']}/{name}"] = f.read(name)
    return out


def final_tables(run_dir: Path) -> dict:
    """Every table of a run's final checkpoint by key (row ``k`` holds key ``k``), however
    many servers wrote it."""
    step = complete_steps(run_dir)[0]
    doc = manifest.load(step)
    assert doc["final"]
    return read_tables(step, doc)
