"""The `brainllm` command. One thin function per command; the work happens in the library modules."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Reconstruct perceived language from fMRI with a frozen LLM (BrainLLM).")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def simulate(
    out: Path = typer.Option(..., "--out", help="Folder to write the prepared dataset to."),
    design: str = typer.Option("sentence", help="sentence (Pereira-like) or story (Huth-like)."),
    snr: float = typer.Option(0.1, help="Per-voxel signal/noise variance ratio; 0 = no brain signal."),
    voxels: int = typer.Option(2000, help="Voxels on the simulated cortical sheet."),
    components: int = typer.Option(200, help="PCA dimensions kept."),
    seed: int = typer.Option(0, help="Random seed (the output is deterministic for a seed)."),
    passages: Optional[int] = typer.Option(None, help="Use only this many corpus passages."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
) -> None:
    """Simulate a participant (SIMULATED data) and write it as a prepared dataset."""
    from .data.simulate import SimulationConfig, simulate as run

    sim = run(SimulationConfig(design=design, snr=snr, voxels=voxels, components=components, seed=seed,
                               passages=passages))
    sim.dataset.save(out, overwrite=overwrite)
    typer.echo(f"SIMULATED participant written to {out}: {len(sim.dataset)} samples, "
               f"{sim.dataset.frames.shape[0]} frames x {sim.dataset.feature_dim} features")


@app.command()
def inspect(path: Path = typer.Argument(..., help="A prepared dataset folder."),
            examples: int = typer.Option(3, help="How many example samples to show.")) -> None:
    """Summarise a prepared dataset: counts, length distributions, examples."""
    from .data.dataset import BrainTextDataset

    typer.echo(BrainTextDataset.load(path).describe(examples))


@app.command()
def backbones() -> None:
    """List the backbones this machine can load offline, and how to add the missing ones."""
    from . import backbones as bb

    for row in bb.available():
        typer.echo(f"{row['name']:<14} {row['status']:<32} {row['path']}")


def main() -> None:  # pragma: no cover - console entry point alias
    app()
