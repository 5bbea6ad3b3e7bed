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
def train(
    config: Optional[Path] = typer.Argument(None, help="Experiment YAML (see configs/); defaults if omitted."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value: --set training.lr=3e-4 (repeatable)."),
    resume: bool = typer.Option(False, help="Continue the run in the output folder from its last checkpoint."),
) -> None:
    """Train BrainLLM (warm-up, then generation loss with early stopping on the validation split)."""
    from . import config as cfg_mod
    from .training import train as run

    cfg = cfg_mod.load(config, set_)
    state = run(cfg, resume=resume)
    typer.echo(f"run {cfg.output}: best validation loss {state.best_valid:.4f} (main epoch {state.best_epoch})")


@app.command()
def generate(
    run_dir: Path = typer.Argument(..., help="A run folder written by `brainllm train`."),
    split: str = typer.Option("test", help="train, valid or test."),
    condition: list[str] = typer.Option(["brain"], help="brain, permuted, no_brain (repeatable)."),
    set_: list[str] = typer.Option([], "--set", help="Override a generation setting: --set method=greedy."),
    permutations: Optional[int] = typer.Option(None, help="PerBrainLLM repeats (default: the run's config)."),
    crossloss: int = typer.Option(0, help="Also score this many samples under every other sample's frames "
                                          "(identification accuracy); 0 = skip."),
) -> None:
    """Decode a split under input conditions -> RUN/predictions/<split>_<condition>.jsonl."""
    from .config import GenerationConfig, apply_overrides
    from .generation import cross_losses, generate_predictions
    from .runs import load_run

    run = load_run(run_dir)
    values = apply_overrides(dict(run.config.generation.__dict__), set_)
    if permutations is not None:
        values["permutations"] = permutations
    gen_cfg = GenerationConfig(**values)
    for cond in condition:
        typer.echo(f"wrote {generate_predictions(run, split, cond, gen_cfg)}")
    if crossloss:
        typer.echo(f"wrote {cross_losses(run, split, crossloss, batch_size=gen_cfg.batch_size)}")


@app.command()
def backbones() -> None:
    """List the backbones this machine can load offline, and how to add the missing ones."""
    from . import backbones as bb

    for row in bb.available():
        typer.echo(f"{row['name']:<14} {row['status']:<32} {row['path']}")


def main() -> None:  # pragma: no cover - console entry point alias
    app()
