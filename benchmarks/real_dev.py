"""Real-data development benchmark: every named recipe trained, decoded and evaluated on the BrainLLM authors'
released Pereira example (the 120 development passages in ../shared/data/pereira-example-dev).

For each recipe (below), exactly the commands a user would type, so every number can be rerun:
  1. `brainllm convert released DEV --out PREPARED` (once);
  2. `brainllm train configs/released-example_smollm2-135m.yaml --set data.path=PREPARED --set output=RUN
     --set data.split_seed=S <recipe keys>`: split by passage (train/valid/test 84/12/24 passages, seed
     `--split-seed`, default 0), model selection on validation only;
  3. for recipes with the Bayesian decoder, `brainllm tune-decoder RUN` (encoding model by CV over training
     passages, λ and the number of candidates on validation), unless `train` tuned it (`recipe: brain`);
  4. `brainllm generate RUN --condition brain permuted no_brain [nuisance] --permutations P --crossloss N`
     (the run's default decoder);
  5. `brainllm evaluate RUN` (test split), whose scores.json this script reads into one table row per recipe
     (`post_*`: the paper's loss test under the Bayesian decoder's own distribution, `decoding.bayes`).
Nothing but step 5 reads the test passages. A finished step is not rerun (delete RUN, or OUT/decoded/RECIPE for
the decoding and evaluation, to redo it).

Recipes:
  paper         the paper's recipe (lr 3e-3, 8 epochs; the paper's beam 5, repetition penalty 2, 4-32 tokens)
  paper+bayes   the same trained run, decoded by the Bayesian decoder (decoding.bayes): what `training.recipe:
                brain` does
  noise         the noise-trained control: the paper recipe trained on training frames permuted across passages,
                decoded like `paper`
  noise+bayes   the same control decoded by its own Bayesian decoder (tuned on its permuted training frames)
  ridge         `training.recipe: ridge` (a closed-form ridge start and a centred adapter)
  brain         `training.recipe: brain`: the paper's training and the decoder's tuning in one `brainllm train`
                (timed together), decoded by its Bayesian decoder
  brain-hf      the same run and decoder, its candidates drawn by the reference sampler (HF generate, a
                teacher-forced pass for log p_LM, each candidate's states from scratch; `--set sampler=hf`)
  brain-paper   the same run decoded as the paper decodes (beam 5, `--set rerank=none`): the brain recipe's training
                is the paper's, so this is the paper recipe's row without a second training
  noise-brain   the noise-trained control of `brain`: `training.recipe: brain` on training frames permuted across
                passages (its decoder tuned on frames permuted across training + validation)
Each recipe's minutes count its training (when this call trained it), tuning, decoding and evaluation.

With `--folds N` the split is an outer cross-validation instead (`data.split: kfold_by_stimulus`, seed
`--split-seed`): each recipe runs the steps above once per fold in OUT/fold<f>/ (each fold tests its own 1/N of the
passages and selects on its own validation passages from the other folds), then `brainllm evaluate-folds` scores the
folds' test samples as one test set in OUT/pooled/RECIPE: every passage tested once, the tests over all of them.

    .venv/bin/python benchmarks/real_dev.py [--recipes paper paper+bayes noise+bayes] [--dev ../shared/data/...]
        [--out runs/real-dev] [--split-seed 0] [--folds 5 [--fold 0 1]] [--permutations 3] [--crossloss 48]
        [--task sentence] [--nuisance-decoding] [--retrieval]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import host_info, print_table, write_json

CONFIG = "configs/released-example_smollm2-135m.yaml"
BASE = ["training.lr=3e-3", "training.epochs=8"]
#: recipe -> (training run name, its --set keys, Bayesian decoder?, generate's extra --set keys)
RECIPES: dict[str, tuple[str, list[str], bool, list[str]]] = {
    "paper": ("paper", BASE, False, []),
    "paper+bayes": ("paper", BASE, True, []),
    "noise": ("noise", BASE + ["training.permute_frames=true"], False, []),
    "noise+bayes": ("noise", BASE + ["training.permute_frames=true"], True, []),
    "ridge": ("ridge", BASE + ["training.recipe=ridge"], False, []),
    "brain": ("brain", BASE + ["training.recipe=brain"], True, []),
    "brain-hf": ("brain", BASE + ["training.recipe=brain"], True, ["sampler=hf"]),
    "brain-paper": ("brain", BASE + ["training.recipe=brain"], False, []),
    "noise-brain": ("noise-brain", BASE + ["training.permute_frames=true", "training.recipe=brain"], True, []),
}


def brainllm(*args: str) -> None:
    cmd = [sys.executable, "-m", "brainllm", *args]
    print("$ brainllm " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def finished(run: Path) -> bool:
    state = run / "checkpoint" / "trainer_state.json"
    return state.exists() and json.loads(state.read_text()).get("stage") == "done"


def evaluate_recipe(name: str, prepared: Path, out: Path, permutations: int, crossloss: int,
                    bayes_permutations: int, nuisance_decoding: bool, split_seed: int = 0,
                    retrieval: bool = False, split_keys: tuple[str, ...] = ()) -> dict:
    run_name, keys, bayes, decode_keys = RECIPES[name]
    keys = [*split_keys, *keys]
    run = out / run_name
    start = time.perf_counter()
    if not finished(run):
        brainllm("train", CONFIG, "--set", f"data.path={prepared}", "--set", f"output={run}",
                 "--set", f"data.split_seed={split_seed}", *[a for k in keys for a in ("--set", k)])
    decoded = out / "decoded" / name  # predictions per recipe: a copy of the run folder's files, not its weights
    if (decoded / "evaluation" / "scores.json").exists():  # decoded and evaluated before
        scores = json.loads((decoded / "evaluation" / "scores.json").read_text())
        return {"recipe": name, "minutes": "-", **row_of(scores)}
    sets = [a for k in decode_keys for a in ("--set", k)]
    if bayes:
        if not (run / "decoder.json").exists():
            brainllm("tune-decoder", str(run))
    else:
        sets += ["--set", "rerank=none"]
    conditions = (["brain", "permuted", "no_brain"] + (["nuisance"] if bayes and nuisance_decoding else [])
                  + (["retrieval"] if bayes and retrieval else []))
    if bayes:  # each sample's candidates are sampled and scored again per derangement: the slow part on a CPU
        permutations = bayes_permutations
    subprocess.run(["rm", "-rf", str(run / "predictions")], check=True)  # another recipe's decodes of this run
    brainllm("generate", str(run), *[a for c in conditions for a in ("--condition", c)], "--permutations",
             str(permutations), "--crossloss", str(crossloss), *sets)
    brainllm("evaluate", str(run))
    decoded.mkdir(parents=True, exist_ok=True)
    for sub in ("predictions", "evaluation"):
        subprocess.run(["rm", "-rf", str(decoded / sub)], check=True)
        subprocess.run(["cp", "-r", str(run / sub), str(decoded / sub)], check=True)
    scores = json.loads((run / "evaluation" / "scores.json").read_text())
    return {"recipe": name, "minutes": round((time.perf_counter() - start) / 60, 1), **row_of(scores)}


def pooled_row(name: str, runs: list[Path], out: Path) -> dict:
    """The recipe's folds scored as one test set (`brainllm evaluate-folds`) in OUT/pooled/RECIPE."""
    pooled = out / "pooled" / name
    brainllm("evaluate-folds", *map(str, runs), "--out", str(pooled))
    scores = json.loads((pooled / "scores.json").read_text())
    return {"recipe": name, "fold": f"{len(runs)} pooled", "minutes": "-", **row_of(scores)}


def row_of(s: dict) -> dict:
    """The done-when numbers of one evaluation."""
    def comp(control: str, metric: str) -> dict:
        return s["comparisons"].get(f"brain_vs_{control}", {}).get(metric, {})

    def cond(c: str, metric: str) -> float:
        return s["conditions"].get(c, {}).get(metric, {}).get("mean", float("nan"))

    pw = s["pairwise_accuracy"].get("vs_permuted", {})
    post = s["pairwise_accuracy"].get("posterior_vs_permuted", {})
    b1, b1p = cond("brain", "bleu1_per_sample"), cond("permuted", "bleu1_per_sample")
    ident = s.get("decoder_identification") or {}
    enc = ident.get("encoding_model", {})
    nuis = ident.get("length_position_model", {})
    return {
        "pairwise": f"{pw.get('mean', float('nan')):.3f}", "pairwise_p": f"{pw.get('p_signflip_stimuli', 1):.3g}",
        "dloss": f"{comp('permuted', 'loss_nats').get('diff', float('nan')):+.4f}",
        "dloss_p": f"{comp('permuted', 'loss_nats').get('p_signflip_stimuli', 1):.3g}",
        "post_pairwise": f"{post.get('mean', float('nan')):.3f}",
        "post_pairwise_p": f"{post.get('p_signflip_stimuli', float('nan')):.3g}",
        "post_dloss": f"{comp('permuted', 'posterior_loss_nats').get('diff', float('nan')):+.4f}",
        "post_dloss_p": f"{comp('permuted', 'posterior_loss_nats').get('p_signflip_stimuli', float('nan')):.3g}",
        "bleu1": f"{b1:.3f}", "bleu1_perm": f"{b1p:.3f}", "bleu1_ratio": f"{b1 / b1p:.2f}" if b1p else "nan",
        "bleu1_p": f"{comp('permuted', 'bleu1_per_sample').get('p_signflip_stimuli', 1):.3g}",
        "semsim_d": f"{comp('permuted', 'semsim_minilm_cosine').get('diff', float('nan')):+.4f}",
        "semsim_p": f"{comp('permuted', 'semsim_minilm_cosine').get('p_signflip_stimuli', 1):.3g}",
        "bleu1_std": f"{cond('no_brain', 'bleu1_per_sample'):.3f}",
        "bleu1_nuis": f"{cond('nuisance', 'bleu1_per_sample'):.3f}",
        "bleu1_nuis_p": f"{comp('nuisance', 'bleu1_per_sample').get('p_signflip_stimuli', float('nan')):.3g}",
        "semsim": f"{cond('brain', 'semsim_minilm_cosine'):.3f}",
        "semsim_perm": f"{cond('permuted', 'semsim_minilm_cosine'):.3f}",
        "semsim_nuis": f"{cond('nuisance', 'semsim_minilm_cosine'):.3f}",
        "semsim_nuis_p": f"{comp('nuisance', 'semsim_minilm_cosine').get('p_signflip_stimuli', float('nan')):.3g}",
        "semsim_retr": f"{cond('retrieval', 'semsim_minilm_cosine'):.3f}",
        "semsim_retr_p": f"{comp('retrieval', 'semsim_minilm_cosine').get('p_signflip_stimuli', float('nan')):.3g}",
        "bleu1_retr": f"{cond('retrieval', 'bleu1_per_sample'):.3f}",
        "ident_x": f"{enc.get('across', float('nan')):.3f}", "ident_w": f"{enc.get('within', float('nan')):.3f}",
        "nuis_x": f"{nuis.get('across', float('nan')):.3f}", "nuis_w": f"{nuis.get('within', float('nan')):.3f}",
        "verdicts": s.get("verdicts", []),
    }


COLUMNS = ["fold", "recipe", "pairwise", "pairwise_p", "dloss", "dloss_p", "post_pairwise", "post_pairwise_p", "post_dloss",
           "post_dloss_p", "bleu1", "bleu1_perm", "bleu1_ratio", "bleu1_p",
           "semsim_d", "semsim_p", "bleu1_std", "bleu1_nuis", "bleu1_nuis_p", "semsim", "semsim_perm", "semsim_nuis",
           "semsim_nuis_p", "semsim_retr", "semsim_retr_p", "bleu1_retr", "ident_x", "ident_w", "nuis_x", "nuis_w",
           "minutes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["paper+bayes", "noise", "paper"], choices=RECIPES)
    parser.add_argument("--dev", default="../shared/data/pereira-example-dev")
    parser.add_argument("--task", default="continuation", choices=["continuation", "sentence"],
                        help="the samples (data.tasks): the paper's continuations, or whole sentences without a prompt")
    parser.add_argument("--prepared", default=None, help="default prepared/pereira-dev (-sentence for that task)")
    parser.add_argument("--out", default="runs/real-dev")
    parser.add_argument("--split-seed", type=int, default=0,
                        help="data.split_seed of every run (a new seed: test passages no decoder was compared on)")
    parser.add_argument("--folds", type=int, default=0,
                        help="N > 0: an outer cross-validation instead of one split: fold f of N "
                             "(`data.split: kfold_by_stimulus`, seed --split-seed) in OUT/fold<f>, each passage "
                             "tested once; the folds are then scored as one test set (`brainllm evaluate-folds`, "
                             "OUT/pooled/RECIPE)")
    parser.add_argument("--fold", type=int, nargs="*", default=None,
                        help="with --folds: only these folds (two or more are pooled too)")
    parser.add_argument("--permutations", type=int, default=3)
    parser.add_argument("--crossloss", type=int, default=48)
    parser.add_argument("--bayes-permutations", type=int, default=1,
                        help="PerBrainLLM derangements for recipes with the Bayesian decoder")
    parser.add_argument("--nuisance-decoding", action="store_true",
                        help="also decode with the length/position model (the nuisance control's decoding; its "
                             "identification is always reported)")
    parser.add_argument("--retrieval", action="store_true",
                        help="also decode the retrieval baseline (the nearest training text by the encoding model)")
    args = parser.parse_args()
    print(f"host: {host_info()}")
    if args.prepared is None:
        args.prepared = "prepared/pereira-dev" + ("-sentence" if args.task == "sentence" else "")
    prepared, out = Path(args.prepared), Path(args.out)
    if not (prepared / "dataset.json").exists():
        if not Path(args.dev).exists():
            sys.exit(f"{args.dev} not found: the development data live in ../shared/data/pereira-example-dev.")
        brainllm("convert", "released", args.dev, "--out", str(prepared), "-o", f"task={args.task}")
    folds = [(out, ())] if not args.folds else [
        (out / f"fold{f}", ("data.split=kfold_by_stimulus", f"data.n_folds={args.folds}", f"data.fold={f}"))
        for f in (range(args.folds) if args.fold is None else args.fold)]
    rows = []
    for name in args.recipes:
        rows += [{**evaluate_recipe(name, prepared, fold_out, args.permutations, args.crossloss,
                                    args.bayes_permutations, args.nuisance_decoding, args.split_seed, args.retrieval,
                                    split_keys), **({"fold": fold_out.name} if args.folds else {})}
                 for fold_out, split_keys in folds]
        if args.folds and len(folds) > 1:  # the fold runs now hold this recipe's predictions
            rows.append(pooled_row(name, [fold_out / RECIPES[name][0] for fold_out, _ in folds], out))
    print()
    print_table(rows, COLUMNS)
    for row in rows:
        for line in row["verdicts"]:
            print(f"{row['recipe']}: {line}")
    print(f"wrote {write_json('real_dev', {'host': host_info(), 'args': vars(args), 'rows': rows})}")


if __name__ == "__main__":
    main()
