"""The `brainllm` command. One thin function per command; the work happens in the library modules."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import BrainLLMError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Reconstruct perceived language from fMRI with a frozen LLM (BrainLLM).")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def simulate(
    out: Path = typer.Option(..., "--out", help="Folder to write the prepared dataset to."),
    design: str = typer.Option("sentence", help="sentence (Pereira-like) or story (Huth-like)."),
    task: str = typer.Option("continuation", help="Sentence design: continuation (the paper's samples: a prompt of "
                                                  "1 or 2 chunks, the next chunk) or sentence (no prompt, the whole "
                                                  "sentence)."),
    snr: float = typer.Option(0.115, help="Per-voxel signal/noise variance ratio; 0 = no brain signal (0.115 is "
                                        "calibrated to real data, docs/realism.md)."),
    voxels: int = typer.Option(2000, help="Voxels on the simulated cortical sheet."),
    components: int = typer.Option(200, help="PCA dimensions kept."),
    seed: int = typer.Option(0, help="Random seed (the output is deterministic for a seed)."),
    passages: Optional[int] = typer.Option(None, help="Use only this many corpus passages."),
    stories: int = typer.Option(12, help="Story design: deal the passages into this many stories (runs)."),
    backbone: str = typer.Option("smollm2-135m", help="LM whose mean states (with MiniLM) drive the simulated "
                                                      "voxels; 'none': MiniLM alone."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
) -> None:
    """Simulate a participant (SIMULATED data) and write it as a prepared dataset."""
    from .data.simulate import SimulationConfig, simulate as run

    cfg = SimulationConfig(design=design, task=task, snr=snr, voxels=voxels, components=components, seed=seed,
                           passages=passages, stories=stories, backbone=None if backbone == "none" else backbone)
    spaces = None
    if cfg.backbone is not None:
        from .model.text_spaces import backbone_spaces

        spaces = backbone_spaces(cfg.backbone, cfg.layers)
    sim = run(cfg, spaces=spaces)
    sim.dataset.save(out, overwrite=overwrite)
    typer.echo(f"SIMULATED participant written to {out}: {len(sim.dataset)} samples, "
               f"{sim.dataset.frames.shape[0]} frames x {sim.dataset.feature_dim} features")


@app.command()
def inspect(path: Path = typer.Argument(..., help="A prepared dataset folder."),
            examples: int = typer.Option(3, help="How many example samples to show."),
            profile: bool = typer.Option(False, help="Print the realism profile instead (docs/realism.md): "
                                                     "feature spaces vs frames, 2-way identification."),
            backbone: str = typer.Option("smollm2-135m", help="--profile: the LM whose mean states are profiled."),
            out: Optional[Path] = typer.Option(None, "--out", help="--profile: JSON file to write (default "
                                                                   "realism-<folder name>.json here)."),
            against: Optional[Path] = typer.Option(None, help="--profile: a profile JSON to print beside it "
                                                              "(e.g. the real data's).")) -> None:
    """Summarise a prepared dataset: counts, length distributions, examples (or its realism profile)."""
    from .data.dataset import BrainTextDataset

    dataset = BrainTextDataset.load(path)
    if not profile:
        typer.echo(dataset.describe(examples))
        return
    from .io import read_json, write_json
    from .model.realism import profile_table, realism_profile

    result = realism_profile(dataset, backbone=backbone)
    target = out or Path(f"realism-{path.resolve().name}.json")
    write_json(target, result)
    tables = {path.name: result}
    if against is not None:
        tables = {against.stem: read_json(against), path.name: result}
    typer.echo(profile_table(tables) + f"\n\nwritten to {target}")


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
    from accelerate import PartialState  # the process group training set up: under torchrun, one line, not one per rank

    if PartialState().is_main_process:
        typer.echo(f"run {cfg.output}: best validation loss {state.best_valid:.4f} (main epoch {state.best_epoch})")
        if cfg.generation.rerank == "encoding":  # the config asks for the Bayesian decoder: fit and tune it now
            from .experiments.decoder_tuning import DEFAULT_REFIT_WITH_VALID, DEFAULT_TOLERANCE

            # a guided search or retrieval seeds the config asks for are tried against none
            gen = cfg.generation
            widths = sorted({0, gen.guided_beams}) if gen.guided_beams else None
            seeds = sorted({0, gen.seeded_sentences}) if gen.seeded_sentences else None
            tune_decoder(Path(cfg.output), [], criterion=None, tolerance=DEFAULT_TOLERANCE,
                         context_sentences=None, refit_with_valid=DEFAULT_REFIT_WITH_VALID, guided_beams=widths,
                         seeded_sentences=seeds)


@app.command()
def generate(
    run_dir: Path = typer.Argument(..., help="A run folder written by `brainllm train`."),
    split: str = typer.Option("test", help="train, valid or test."),
    condition: list[str] = typer.Option(["brain"], help="brain, permuted, no_brain, nuisance (the length/position "
                                                        "decoder of a tuned run; repeatable)."),
    set_: list[str] = typer.Option([], "--set", help="Override a generation setting: --set method=greedy."),
    permutations: Optional[int] = typer.Option(None, help="PerBrainLLM repeats (default: the run's config)."),
    crossloss: int = typer.Option(0, help="Also score this many samples under every other sample's frames "
                                          "(identification accuracy); 0 = skip."),
) -> None:
    """Decode a split under input conditions -> RUN/predictions/<split>_<condition>.jsonl."""
    from .config import GENERATION_CONDITIONS, generation_config
    from .errors import check_choice
    from .decoding.generation import cross_losses, generate_predictions
    from .runs import load_run, read_config

    # every setting is checked before the dataset and the backbone are loaded
    changes = {} if permutations is None else {"permutations": permutations}
    gen_cfg = generation_config(read_config(run_dir).generation, set_, **changes)
    for cond in condition:
        check_choice("--condition", cond, GENERATION_CONDITIONS)
    run = load_run(run_dir)
    for cond in condition:
        typer.echo(f"wrote {generate_predictions(run, split, cond, gen_cfg)}")
    if crossloss:
        typer.echo(f"wrote {cross_losses(run, split, crossloss, batch_size=gen_cfg.batch_size)}")
        if gen_cfg.rerank == "encoding":  # the Bayesian decoder's own identification material
            from .decoding.decoder_identification import decoder_crossscore

            typer.echo(f"wrote {decoder_crossscore(run, split, gen_cfg.encoding_weight)}")


@app.command("tune-decoder")
def tune_decoder(
    run_dir: Path = typer.Argument(..., help="A run folder written by `brainllm train`."),
    set_: list[str] = typer.Option([], "--set", help="Override a generation setting of the candidates' search."),
    criterion: Optional[str] = typer.Option(None, help="How validation chooses the picks' λ, rule and number of "
                                            "candidates: content_gain (BLEU-1 over the length/position decoder's "
                                            "picks, within --tolerance of the best BLEU-1), meaning_gain (the same "
                                            "on BLEU-1 + MiniLM similarity), brain_gain (BLEU-1 over permuted "
                                            "frames) or bleu (BLEU-1 alone); default meaning_gain in the sentence "
                                            "task, content_gain otherwise."),
    tolerance: float = typer.Option(0.05, help="content_gain, brain_gain: relative BLEU-1 below the best that is "
                                               "acceptable."),
    context_sentences: Optional[list[int]] = typer.Option(None, help="How many of the passage's previous "
                                                          "sentences the encoding model may read a text after "
                                                          "(repeatable; CV chooses; 0 = alone; default 0 and 1, and "
                                                          "0 alone in the sentence task, where a context would "
                                                          "give the decoder the true previous sentences)."),
    refit_with_valid: bool = typer.Option(True, help="Once everything is chosen, refit the encoding models on the "
                                                     "training and validation samples (identification still grows "
                                                     "with training passages)."),
    guided_beams: Optional[list[int]] = typer.Option(None, help="Widths of the encoding-guided beam search whose "
                                                     "texts join the candidates (repeatable; 0 = none; validation "
                                                     "chooses; each width runs one search per λ > 0 and decoder on "
                                                     "the validation split; default none)."),
    seeded_sentences: Optional[list[int]] = typer.Option(None, help="How many training sentences, retrieved by the "
                                                         "encoding model from the frames, BrainLLM continues for "
                                                         "more candidates (repeatable; 0 = none; validation "
                                                         "chooses; default 0 and 3 in the sentence task, 0 "
                                                         "otherwise)."),
) -> None:
    """Fit the Bayesian decoder of a run (beyond the paper): an encoding model of the frames from the backbone's
    states (layer, dimensions, shrinkage, length/position band weight and passage context by CV over training
    stimuli), then on
    validation the λ of its distribution (held-out likelihood) and the λ and number of candidates of its picks
    (--criterion). Writes RUN/decoder.json + RUN/decoder/; `brainllm generate RUN` then decodes this way."""
    from .config import generation_config
    from .experiments.decoder_tuning import check_selection, tune
    from .runs import RunPaths, load_run, read_config

    check_selection(criterion, tolerance, prefix="--", context_sentences=context_sentences)
    gen_cfg = generation_config(read_config(run_dir).generation, set_)  # checked before anything is loaded
    run = load_run(run_dir)
    result = tune(run, gen_cfg, criterion=criterion, tolerance=tolerance, context_sentences=context_sentences,
                  refit_with_valid=refit_with_valid, guided_beams=guided_beams or None,
                  seeded_sentences=seeded_sentences or None)
    choice = result["encoding_model"]
    typer.echo(f"encoding model: layer {choice['layer']}, {choice['max_dims'] or 'all'} frame dimensions, shrinkage "
               f"{choice['noise_shrinkage']}, nuisance band weight {choice['nuisance_weight']}, read after "
               f"{choice['context_sentences']} previous sentences, CV identification "
               f"{choice['cv_identification']:.3f} (training stimuli)")
    typer.echo(f"decoder: {result['generation']} -> {RunPaths(run_dir).decoder_file}")


tang_app = typer.Typer(no_args_is_help=True, help="The Tang et al. (2023) baseline decoder: fit, then decode a story.")
app.add_typer(tang_app, name="tang")


@tang_app.command("fit")
def tang_fit(
    dataset: Path = typer.Argument(..., help="A prepared story dataset (with runs.jsonl)."),
    out: Path = typer.Option(..., help="Folder to write the fitted decoder to."),
    heldout: list[str] = typer.Option([], help="Story to leave out of training (repeatable)."),
    run: Optional[Path] = typer.Option(None, help="Hold out this BrainLLM run's test stories (same story for both)."),
    backbone: str = typer.Option("smollm2-135m", help="LM for word features and proposals."),
    layer: Optional[int] = typer.Option(None, help="Hidden-state index of word features (default 3/4 depth)."),
    context_words: int = typer.Option(10, help="Fewest preceding words the LM sees."),
    voxels: int = typer.Option(10000, help="Voxels kept by held-out encoding performance."),
    boots: int = typer.Option(50, help="Bootstrap resamples for the per-voxel ridge penalties."),
    space: str = typer.Option("auto", help="raw (voxels), frames (prepared features) or auto."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
) -> None:
    """Fit the encoding model (LM features -> voxels) and the word-rate model on the training stories."""
    from .baselines.tang.encoding import EncodingConfig
    from .baselines.tang.model import TangFitConfig, fit_tang
    from .decoding.wordrate import WordRateConfig

    held = list(heldout) + (_test_stories(run) if run else [])
    cfg = TangFitConfig(backbone=backbone, feature_layer=layer, context_words=context_words, space=space,
                        encoding=EncodingConfig(n_voxels=voxels, n_boots=boots), wordrate=WordRateConfig(n_boots=boots))
    model = fit_tang(dataset, held, out, cfg, overwrite=overwrite)
    typer.echo(f"wrote {out}: trained on {len(model.info['train_stories'])} stories, held out {held}")


def _test_stories(run_dir: Path) -> list[str]:
    """The test stories of a run, from its split and dataset (the backbone is not loaded for this)."""
    from .data.dataset import BrainTextDataset
    from .io import read_json
    from .runs import RunPaths

    paths = RunPaths(run_dir)
    for path in (paths.run_file, paths.split):
        if not path.exists():
            raise BrainLLMError(f"{run_dir} has no {path.name}; is it a `brainllm train` run folder?")
    dataset = BrainTextDataset.load(read_json(paths.run_file)["dataset"])
    return sorted({dataset.by_id(i).stimulus for i in read_json(paths.split)["test"]})


# Options shared by the two full-story decoders.
_STORIES_OUT_HELP = ("Parent folder of the per-story folders and, for several stories, story_summary.json "
                     "(the stories pooled)")
_NULLS = typer.Option(10, help="Brain-free LM sequences for the null distribution (per story).")


def _echo_story_results(evaluations: dict, pooled, out: Path) -> None:
    for story, ev in evaluations.items():
        typer.echo(f"\n== {story}\n{ev.summary_table()}")
    if pooled is not None:
        typer.echo(f"\n== pooled over {len(pooled.stories)} stories\n{pooled.summary_table()}")
    typer.echo(f"wrote {out}")


@tang_app.command("decode")
def tang_decode(
    model: Path = typer.Argument(..., help="A folder written by `brainllm tang fit`."),
    story: list[str] = typer.Option([], help="A held-out story to decode (repeatable; default: every story "
                                             "the model held out)."),
    out: Optional[Path] = typer.Option(None, help=f"{_STORIES_OUT_HELP}; folders decode_<story>; default MODEL."),
    width: int = typer.Option(20, help="Beam width (paper 200; cost grows linearly)."),
    extensions: int = typer.Option(5, help="Most extensions a hypothesis keeps."),
    nulls: int = _NULLS,
    allow_training_story: bool = typer.Option(False, help="Decode a story the model was trained on (leaks)."),
    control: bool = typer.Option(True, help="Also decode the responses rotated by half the run (control)."),
    prior: Optional[Path] = typer.Option(None, help="A trained BrainLLM run (same backbone) as the language prior: "
                                                    "it proposes the words and its log-prob joins the likelihood "
                                                    "(an extension beyond both papers; conditions tang+brainllm, "
                                                    "shifted+brainllm)."),
    prior_weight: float = typer.Option(1.0, help="Weight of the BrainLLM log-prob (1 = Bayes' rule)."),
) -> None:
    """Decode held-out stories with the Tang decoder; score them in 20-s windows against the null; pool them."""
    from .baselines.tang.decode import decode_tang_story
    from .baselines.tang.decoder import TangDecoderConfig
    from .baselines.tang.model import load_tang
    from .experiments.fullstory import PRIOR_SUMMARY_FILE, SUMMARY_FILE, decode_stories

    loaded = load_tang(model)
    prior_run = None
    if prior is not None:
        from .runs import load_run

        prior_run = load_run(prior)
    stories = list(story) or loaded.info["heldout_stories"]
    cfg = TangDecoderConfig(width=width, extensions=extensions)
    out = out or model
    evaluations, pooled = decode_stories(
        lambda s, folder: decode_tang_story(loaded, s, folder, cfg, nulls, allow_training_story, control=control,
                                            prior=prior_run, prior_weight=prior_weight),
        stories, out, "decode_brainprior_" if prior else "decode_", PRIOR_SUMMARY_FILE if prior else SUMMARY_FILE)
    _echo_story_results(evaluations, pooled, out)


@app.command("decode-story")
def decode_story_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder trained on a story dataset."),
    story: list[str] = typer.Option([], help="A test story of the run (repeatable; default: all its test "
                                             "stories)."),
    out: Optional[Path] = typer.Option(None, help=f"{_STORIES_OUT_HELP}; folders story_<story>; default RUN."),
    width: int = typer.Option(3, help="Beam width (authors: 3)."),
    extensions: int = typer.Option(3, help="Most extensions a hypothesis keeps (authors: 3)."),
    context_words: int = typer.Option(10, help="Fewest preceding words the LM sees."),
    permutations: int = typer.Option(1, help="PerBrainLLM repeats over the whole story."),
    nulls: int = _NULLS,
    condition: list[str] = typer.Option([], help="A condition to decode (repeatable): brain, permuted, "
                                                 "other_story, no_brain; default all."),
    decoder_nulls: int = typer.Option(0, help="Also score against N decoder nulls (the same trained decoder fed "
                                              "other stories' frames; each costs one decode): a trained adapter "
                                              "beats the bare-LM null without any brain signal. 0 = off."),
) -> None:
    """Reconstruct whole held-out stories with BrainLLM (+ PerBrainLLM, StdLLM), scored in 20-s windows."""
    from .decoding.fullstory import StoryDecoderConfig
    from .experiments.fullstory import CONDITIONS, decode_stories, decode_story, decoder_null_results
    from .runs import load_run

    loaded = load_run(run_dir)
    cfg = StoryDecoderConfig(width=width, extensions=extensions, context_words=context_words)
    out = out or run_dir
    stories = list(story) or _test_stories(run_dir)
    evaluations, pooled = decode_stories(
        lambda s, folder: decode_story(loaded, s, folder, cfg, permutations=permutations, n_nulls=nulls,
                                       conditions=condition or CONDITIONS, decoder_nulls=decoder_nulls),
        stories, out, "story_")
    _echo_story_results(evaluations, pooled, out)
    if decoder_nulls:
        typer.echo("\n#### the same decodes against the DECODER null (the trained decoder on other stories' frames)")
        _echo_story_results(*decoder_null_results(out, stories), out)


@app.command("story-summary")
def story_summary_cmd(
    folders: list[Path] = typer.Argument(..., help="Decode folders (story_<s> or decode_<s>, each with "
                                                   "story_evaluation.json), one per story."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the pooled evaluation (JSON) here."),
) -> None:
    """Pool already decoded stories into one score per condition and metric (z and p against pooled nulls)."""
    from .evaluation.pooled import pool_folders, write_pooled

    pooled = pool_folders(folders)
    typer.echo(pooled.summary_table())
    if out:
        write_pooled(pooled, out)
        typer.echo(f"wrote {out}")


@app.command()
def backbones() -> None:
    """List the backbones this machine can load offline, and how to add the missing ones."""
    from . import backbones as bb

    for row in bb.available():
        typer.echo(f"{row['name']:<14} {row['status']:<32} {row['path']}")


@app.command()
def convert(
    fmt: str = typer.Argument(..., metavar="FORMAT", help="pereira, huth, narratives or released."),
    src: Path = typer.Argument(..., help="Source file or folder (see docs/datasets.md)."),
    out: Path = typer.Option(..., "--out", help="Folder to write the prepared dataset to."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o",
                                               help="key=value reader, preprocessing or split option (repeatable)."),
    split: Optional[str] = typer.Option(None, help="Split fitted on: by_stimulus, by_story, held_out_story, "
                                                   "within_story, kfold_by_stimulus, by_sample (default per format)."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
) -> None:
    """Convert real fMRI data (or the authors' released files) into a prepared dataset, leak-free."""
    from .data.convert import convert as run, parse_options

    ds = run(fmt, src, out, overwrite=overwrite, split=split, **parse_options(option or []))
    typer.echo(f"{fmt} data written to {out}: {len(ds)} samples, {ds.frames.shape[0]} frames x {ds.feature_dim} "
               f"features; dropped: {ds.meta.get('dropped') or 'nothing'}")


@app.command("evaluate")
def evaluate_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder with predictions (see `brainllm generate`)."),
    split: str = typer.Option("test", help="The split whose predictions are scored."),
    truncate: bool = typer.Option(False, help="The paper's option: cut predictions to the reference length "
                                              "(labelled _truncref in every metric name)."),
    semantic: bool = typer.Option(True, help="Also compute the MiniLM semantic metrics."),
    seed: int = typer.Option(0, help="Seed of the bootstrap and permutation tests."),
) -> None:
    """Score a run's predictions: metrics, controls, tests -> RUN/evaluation/; prints the condition table."""
    from .evaluation.evaluate import evaluate_command

    folder, table = evaluate_command(run_dir, split, truncate, semantic, seed)
    typer.echo(table)
    typer.echo(f"\nscores written to {folder / 'scores.json'} and {folder / 'table.md'}")


@app.command("evaluate-folds")
def evaluate_folds_cmd(
    run_dirs: list[Path] = typer.Argument(..., help="The fold runs of one outer cross-validation (data.split: "
                                                    "kfold_by_stimulus, one run per data.fold), each with predictions."),
    out: Path = typer.Option(..., "--out", help="Folder for the pooled scores.json, table.md and per_sample.jsonl."),
    split: str = typer.Option("test", help="The split whose predictions are scored."),
    semantic: bool = typer.Option(True, help="Also compute the MiniLM semantic metrics."),
    seed: int = typer.Option(0, help="Seed of the bootstrap and permutation tests."),
) -> None:
    """Score the folds of an outer cross-validation as one test set: every passage tested once, tests over all."""
    from .evaluation.evaluate import EvalConfig, write_evaluation
    from .evaluation.folds import evaluate_folds
    from .evaluation.metrics import MetricConfig
    from .evaluation.tables import text_condition_table

    ev = evaluate_folds(run_dirs, split, MetricConfig(semantic=semantic), EvalConfig(seed=seed))
    folder = write_evaluation(ev, out)
    typer.echo(text_condition_table(ev.summary))
    typer.echo(f"\nscores of {len(run_dirs)} folds written to {folder / 'scores.json'} and {folder / 'table.md'}")


@app.command("ceiling")
def ceiling_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder written by `brainllm train`."),
    split: str = typer.Option("valid", help="The split to probe (default valid: a diagnostic never needs test)."),
    scale: list[float] = typer.Option([], help="Oracle norm / adapter output norm (repeatable; default 0.1, 0.3 "
                                                "and 1, the library's)."),
    max_samples: int = typer.Option(48, help="Samples probed (the cost grows with its square)."),
    tokens: bool = typer.Option(True, help="Also the token oracles: the true continuation tokens, and the tokens a "
                                           "ridge decoder trained on the training samples reads from the frames."),
    layer: list[int] = typer.Option([], help="Also the state oracles at this layer (repeatable): the brain "
                                             "positions' hidden state after it replaced by the continuation's, by a "
                                             "ridge prediction of it, and (with a tuned decoder) by the training "
                                             "states its encoding model retrieves for the frames."),
) -> None:
    """Information ceiling: the loss gain if the adapter delivered the true continuation (its mean embedding;
    its tokens), and what a ridge decoder of tokens from the frames achieves."""
    from .diagnostics.ceiling import DEFAULT_SCALES, ceiling, write_ceiling
    from .runs import RunPaths, load_run

    report = ceiling(load_run(run_dir), split, scale or DEFAULT_SCALES, max_samples, tokens=tokens,
                     layers=layer)
    path = RunPaths(run_dir).ceiling(split)
    write_ceiling(report, path)
    typer.echo(report.table() + f"\n\nwritten to {path}")


@app.command("report")
def report_cmd(
    runs: list[Path] = typer.Argument(..., help="One or more run folders, compared in one report."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default RUN/report for one run)."),
    split: str = typer.Option("test", help="The split whose predictions are scored."),
    truncate: bool = typer.Option(False, help="Cut predictions to the reference length (the paper's option)."),
    semantic: bool = typer.Option(True, help="Also compute the MiniLM semantic metrics."),
    metric: str = typer.Option("bleu1_per_sample", help="Metric variant plotted in the analyses."),
    seed: int = typer.Option(0, help="Seed of the bootstrap and permutation tests."),
) -> None:
    """Write a self-contained report.html (+ scores.json, table.md) for one or several runs."""
    from .evaluation.report import report_command

    page = report_command(runs, out, split, truncate, semantic, seed, metric)
    typer.echo(f"report written to {page}")


@app.command("analyze")
def analyze_cmd(
    runs: list[Path] = typer.Argument(..., help="One or more run folders."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the plots (default RUN/evaluation/analyses)."),
    split: str = typer.Option("test", help="The split whose predictions are scored."),
    metric: str = typer.Option("bleu1_per_sample", help="Metric variant to analyse."),
    truncate: bool = typer.Option(False, help="Cut predictions to the reference length (the paper's option)."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
) -> None:
    """Scores by surprisal, prompt length, training size, backbone and brain region, as PNG plots + JSON."""
    from .evaluation.report import analyze_command

    for path in analyze_command(runs, out, split, metric, truncate, seed):
        typer.echo(f"wrote {path}")


def main() -> None:
    """Console entry point: brainllm's own errors print as one clear line (exit 2) instead of a traceback.

    Set BRAINLLM_DEBUG=1 to see the traceback. Off a terminal, a line whenever the log has been silent for the
    progress heartbeat (`progress.watch_process`).
    """
    from .progress import watch_process

    watch_process()
    try:
        app()
    except BrainLLMError as err:
        if os.environ.get("BRAINLLM_DEBUG"):
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
