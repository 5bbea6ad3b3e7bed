"""The Bayesian decoder: with frames that encode their text it picks the true continuation over distractors, with
noise frames it does no better than the LM prior; tuning writes the run's default decoder, which `generate` then
uses; the noise-trained control permutes only training frames."""

import json
from dataclasses import replace

import numpy as np
import pytest

from brainllm import backbones, config, training
from brainllm.data.dataset import BrainTextDataset, Sample
from brainllm.errors import ConfigError
from brainllm.decoding.bayes import encoding_scores, posterior_losses
from brainllm.decoding.candidates import Candidates, lm_scores
from brainllm.decoding.encoding_choice import choose_encoding_model
from brainllm.decoding.encoding_model import (EncodingChoice, SentenceScorer, positions_of, sample_frames,
                                              save_scorer)
from brainllm.experiments.decoder_tuning import best_nuisance_rows, choose_decoder, tune
from brainllm.decoding.generation import generate_predictions
from brainllm.io import read_jsonl
from brainllm.decoding.sentences import teacher_forced_losses
from brainllm.model.collate import permute_frames
from brainllm.model import TextEncoder
from brainllm.model.text_features import (full_text, mean_states, nuisance_features, passage_contexts,
                                          stimulus_positions)
from brainllm.runs import load_run

LAYER = 2
POSTERIOR_PAIRWISE_FLOOR = 0.65


def planted_dataset(tiny_llama_path, source, snr: float | None, seed: int = 0) -> BrainTextDataset:
    """One frame per sample: a fixed random linear map of (the tiny LM's layer-2 mean state + nuisance) of its
    text, plus noise; `snr=None` gives pure noise frames."""
    model, tok = backbones.load(str(tiny_llama_path))
    samples = [Sample(s.id, s.stimulus, s.subject, s.prompt, s.continuation, [i]) for i, s in enumerate(source)]
    ds = BrainTextDataset(np.zeros((len(samples), 1), np.float32), samples, {"subject": "s", "source": "test"})
    texts = [full_text(s.prompt, s.continuation) for s in samples]
    x = np.hstack([mean_states(model, TextEncoder(tok), texts, [LAYER])[LAYER],
                   nuisance_features(texts, stimulus_positions(ds, samples))])
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    rng = np.random.default_rng(seed)
    signal = x @ rng.standard_normal((x.shape[1], 40)) / np.sqrt(x.shape[1])
    noise = rng.standard_normal(signal.shape)
    frames = noise if snr is None else signal * np.sqrt(snr) + noise
    return BrainTextDataset(frames.astype(np.float32), samples, {"subject": "s", "source": "planted"})


def train_run(root, tiny_llama_path, dataset, **training_extra):
    dataset.save(root / "data")
    cfg = config.from_dict({"data": {"path": str(root / "data")},
                            "model": {"backbone": str(tiny_llama_path), "adapter": {"name": "mlp", "hidden": 32}},
                            "training": {"warmup_epochs": 1, "epochs": 1, "lr": 3e-3, "cpu": True, **training_extra},
                            "generation": {"method": "greedy", "max_new_tokens": 4, "min_new_tokens": 1,
                                           "permutations": 1, "batch_size": 16, "n_candidates": 3,
                                           "precision": "float32"},  # exact resumes, whatever the host
                            "output": str(root / "run")})
    training.train(cfg)
    return load_run(root / "run")


@pytest.fixture(scope="module")
def source_samples():
    from brainllm.data.simulate import simulate

    return list(simulate(design="sentence", passages=30, voxels=64, components=8, seed=2).dataset)


def pick_rate(run, scorer, weight: float, n_distractors: int = 4) -> float:
    """Fraction of test samples whose true continuation wins among it + distractors (other test continuations)."""
    samples = run.encoder.encode_all(run.dataset, run.split.test)
    rng = np.random.default_rng(0)
    conts = [run.dataset.by_id(s.id).continuation for s in samples]
    texts, ids = [], []
    for i, s in enumerate(samples):
        others = rng.choice([j for j in range(len(samples)) if j != i], n_distractors, replace=False)
        texts.append([conts[i]] + [conts[j] for j in others])
        ids.append([list(run.encoder.split_ids(run.dataset.by_id(s.id).prompt, t)[1]) for t in texts[-1]])
    lm = lm_scores(run, samples, ids, "brain", 16)
    enc = encoding_scores(run, scorer, samples, texts)
    return float(np.mean([np.argmax(a + weight * b) == 0 for a, b in zip(lm, enc)]))


def fitted_scorer(run):
    train = run.encoder.encode_all(run.dataset, run.split.train)
    model, choice, rows = choose_encoding_model(run, train, [LAYER], [None], [0.5], nuisance_weights=[1.0, 3.0])
    # both bands tried, and the refitted model is the chosen one
    assert [r["nuisance_weight"] for r in rows] == [1.0, 3.0]
    assert model.config.nuisance_weight == choice.nuisance_weight and model.config.nuisance_columns == 2
    return SentenceScorer(run, model, choice)


def save_scorers(run, scorer: SentenceScorer) -> None:
    """Save `scorer` as the run's encoding model and, beside it, a length/position-only model fitted on its
    training samples (what `tune` leaves for the nuisance control)."""
    save_scorer(run, scorer)
    train = run.encoder.encode_all(run.dataset, run.split.train)
    nuisance, nchoice, _ = choose_encoding_model(run, train, [None], [None], [0.5])
    save_scorer(run, SentenceScorer(run, nuisance, nchoice), "nuisance")


def test_planted_frames_pick_the_true_text_and_noise_does_not(tmp_path, tiny_llama_path, source_samples):
    run = train_run(tmp_path / "planted", tiny_llama_path, planted_dataset(tiny_llama_path, source_samples, 4.0))
    scorer = fitted_scorer(run)
    prior = pick_rate(run, scorer, 0.0)
    assert pick_rate(run, scorer, 10.0) > max(0.9, prior + 0.3)

    noise = train_run(tmp_path / "noise", tiny_llama_path, planted_dataset(tiny_llama_path, source_samples, None))
    scorer = fitted_scorer(noise)
    assert pick_rate(noise, scorer, 10.0) <= pick_rate(noise, scorer, 0.0) + 0.1


def test_a_scorer_in_context_reads_each_candidate_after_its_passage(tmp_path, tiny_llama_path, source_samples):
    run = train_run(tmp_path, tiny_llama_path, planted_dataset(tiny_llama_path, source_samples, 4.0))
    train = run.encoder.encode_all(run.dataset, run.split.train)
    model, choice, rows = choose_encoding_model(run, train, [LAYER, None], [None], [0.5], context_sentences=[0, 1])
    # the layer is tried alone and in context; the nuisance-only design has no text to read in context
    assert sorted((r["layer"], r["context_sentences"]) for r in rows if r["layer"] is not None) == \
        [(LAYER, 0), (LAYER, 1)]
    assert [r["context_sentences"] for r in rows if r["layer"] is None] == [0]
    scorer = SentenceScorer(run, model, replace(choice, layer=LAYER, context_sentences=1))
    samples = run.encoder.encode_all(run.dataset, run.split.test)[:6]
    conts = [[run.dataset.by_id(s.id).continuation, "and then it rained"] for s in samples]
    got = encoding_scores(run, scorer, samples, conts)
    # by hand: prompt + candidate read after the sample's previous sentence, its own positions and frames
    contexts = passage_contexts(run.dataset, [run.dataset.by_id(s.id) for s in samples], 1)
    assert any(contexts) and contexts == scorer.contexts(samples)
    full = [full_text(run.dataset.by_id(s.id).prompt, c) for s, cs in zip(samples, conts) for c in cs]
    ctx = [contexts[i] for i, cs in enumerate(conts) for _ in cs]
    states = mean_states(run.model.backbone, run.encoder, full, [LAYER], contexts=ctx)[LAYER]
    x = np.hstack([states, nuisance_features(full, np.repeat(positions_of(run, samples), 2))])
    expected = model.log_likelihood(x, np.repeat(sample_frames(run, samples), 2, axis=0))
    np.testing.assert_allclose(np.concatenate(got), expected, rtol=1e-6)
    alone = encoding_scores(run, SentenceScorer(run, model, replace(choice, layer=LAYER, context_sentences=0)),
                            samples, conts)
    assert not np.allclose(np.concatenate(got), np.concatenate(alone))
    # decoder files written before the option read texts alone
    old = {k: v for k, v in vars(choice).items() if k != "context_sentences"}
    assert EncodingChoice(**old).context_sentences == 0


def test_posterior_loss_matches_a_hand_computed_normaliser():
    # one sample: LM loss 2 nats/token over 5 tokens (incl. EOS), log p(frames | reference) = -3; three candidates
    # with log p(frames | candidate) -1, -2, -4, drawn 0, 2 and 1 times by the nucleus sampler (the first is the
    # search result, which counts only where a sample repeated it)
    cands = Candidates([[[1], [2], [3]]], [["a", "b", "c"]], [np.zeros(3)], [np.array([-1.0, -2.0, -4.0])],
                       [np.array([0, 2, 1])])
    weight = 0.5
    log_z = np.log((2 * np.exp(weight * -2.0) + np.exp(weight * -4.0)) / 3)
    expected = -(-2.0 * 5 + weight * -3.0 - log_z) / 5
    got = posterior_losses(np.array([2.0]), np.array([5]), np.array([-3.0]), cands, weight)
    assert got[0] == pytest.approx(expected, abs=1e-12)
    # λ = 0 is the adapter-conditioned LM itself; no sample drawn: no estimate
    assert posterior_losses(np.array([2.0]), np.array([5]), np.array([-3.0]), cands, 0.0)[0] == pytest.approx(2.0)
    cands.draws = [np.array([0, 0, 0])]
    assert np.isnan(posterior_losses(np.array([2.0]), np.array([5]), np.array([-3.0]), cands, weight)[0])


def test_tune_sets_the_runs_default_decoder(tmp_path, tiny_llama_path, source_samples):
    run = train_run(tmp_path, tiny_llama_path, planted_dataset(tiny_llama_path, source_samples, 4.0))
    result = tune(run, layers=[1, LAYER], dims=[None, 20], shrinkages=[0.5], weights=[0.0, 1.0], n_candidates=[1, 3])
    # one row per pick rule (MAP, MBR), number of candidates and λ, at the run's one temperature
    assert {r["layer"] for r in result["cv_table"]} == {1, LAYER} and len(result["valid_table"]) == 8
    assert {(r["pick"], r["temperature"]) for r in result["valid_table"]} == {("map", 1.0), ("mbr", 1.0)}
    saved = json.loads((tmp_path / "run" / "decoder.json").read_text())
    assert saved["generation"]["rerank"] == "encoding" and saved["nuisance_model"]["layer"] is None
    # the distribution's λ is the one of the lowest held-out loss; the picks' by the content-gain criterion
    likeliest = min(saved["valid_table"], key=lambda r: r["valid_posterior_loss"])
    assert saved["generation"]["posterior_weight"] == likeliest["encoding_weight"]
    assert saved["criterion"] == "content_gain" and all("valid_bleu1_permuted" in r for r in saved["valid_table"])
    # the length/position decoder's own λ: its best validation BLEU-1 with the chosen row's other settings
    control = max((r for r in saved["valid_table"] if r["n_candidates"] == saved["generation"]["n_candidates"]
                   and r["pick"] == saved["generation"]["pick"]), key=lambda r: (r["valid_bleu1_nuisance"],
                                                                                 -r["encoding_weight"]))
    assert saved["generation"]["nuisance_encoding_weight"] == control["encoding_weight"]
    assert choose_decoder(saved["valid_table"], "content_gain") == next(
        r for r in saved["valid_table"] if r["n_candidates"] == saved["generation"]["n_candidates"]
        and r["encoding_weight"] == saved["generation"]["encoding_weight"] and r["pick"] == saved["generation"]["pick"])
    # the distribution under permuted frames: at λ = 0 it is PerBrainLLM's own loss; with the planted frames and
    # λ = 1 the reference is likelier under its own frames than under another passage's (the paper's pairwise test)
    permuted = permute_frames(run.encoder.encode_all(run.dataset, run.split.valid), run.config.generation.seed)
    perbrain = teacher_forced_losses(run, permuted, "brain", 16).mean()
    by_weight = {r["encoding_weight"]: r for r in saved["valid_table"] if r["n_candidates"] == 3 and r["pick"] == "map"}
    assert by_weight[0.0]["valid_posterior_loss_permuted"] == pytest.approx(perbrain, rel=1e-6)
    at_one = by_weight[1.0]  # here 3.69 against 4.31 nats, pairwise 0.68 against 0.64 at λ = 0
    assert at_one["valid_posterior_loss"] < at_one["valid_posterior_loss_permuted"] - 0.3
    assert at_one["valid_posterior_pairwise"] > by_weight[0.0]["valid_posterior_pairwise"]
    # the length/position decoder picks among the same candidates: at λ = 0 (the LM alone) its picks are BrainLLM's
    for r in saved["valid_table"]:
        if r["encoding_weight"] == 0.0 or r["n_candidates"] == 1:
            assert r["valid_bleu1_nuisance"] == r["valid_bleu1"]
    reloaded = load_run(tmp_path / "run")
    assert reloaded.config.generation.rerank == "encoding"
    assert reloaded.config.generation.posterior_weight == likeliest["encoding_weight"]
    # λ = 0 for the distribution: the posterior loss is BrainLLM's own loss (its normaliser needs sampled candidates)
    at_zero = replace(reloaded.config.generation, posterior_weight=0.0, n_candidates=3)
    rows = read_jsonl(generate_predictions(reloaded, "test", "brain", at_zero))
    np.testing.assert_allclose([r["posterior_loss"] for r in rows], [r["loss"] for r in rows], rtol=1e-9)
    for condition in ("brain", "permuted", "no_brain"):
        rows = read_jsonl(generate_predictions(reloaded, "test", condition))
        assert len(rows) == len(reloaded.split.test) and all(isinstance(r["prediction"], str) for r in rows)
        header = json.loads((tmp_path / "run" / "predictions" / f"test_{condition}.json").read_text())
        assert header["decoding"]["rerank"] == "encoding"


def test_refit_with_valid_changes_the_models_not_the_choices(tmp_path, tiny_llama_path, source_samples):
    from brainllm.decoding.encoding_choice import fit_encoding_model, training_samples
    from brainllm.decoding.encoding_model import load_scorer, scorer_splits

    run = train_run(tmp_path / "planted", tiny_llama_path, planted_dataset(tiny_llama_path, source_samples, 4.0))
    grid = dict(layers=[LAYER], dims=[None], shrinkages=[0.5], weights=[0.0, 1.0], n_candidates=[3],
                context_sentences=[0, 1])
    alone = tune(run, **grid, refit_with_valid=False)
    train_only = load_scorer(run).model.coef_
    assert scorer_splits(run) == ("train",)
    refit = tune(run, **grid)  # the default
    assert refit["valid_table"] == alone["valid_table"] and refit["generation"] == alone["generation"]
    assert refit["refit_with_valid"] and not alone["refit_with_valid"]
    assert scorer_splits(run) == ("train", "valid")  # what diagnostics must not probe in-sample
    scorer = load_scorer(run)
    both = training_samples(run, with_valid=True)
    assert len(both) == len(run.split.train) + len(run.split.valid)
    np.testing.assert_allclose(scorer.model.coef_, fit_encoding_model(run, both, scorer.choice).coef_)
    assert not np.allclose(scorer.model.coef_, train_only)
    # validation-only analyses of the refitted run get the models validation scored with back
    from brainllm.decoding.encoding_choice import validation_scorers

    before_refit, _ = validation_scorers(run)
    np.testing.assert_allclose(before_refit.model.coef_, train_only)
    # a noise-trained control refits on frames permuted across training and validation samples: never a true pair
    noise = train_run(tmp_path / "noise", tiny_llama_path, planted_dataset(tiny_llama_path, source_samples, 4.0),
                      permute_frames=True)
    samples = training_samples(noise, with_valid=True)
    stimulus = {s.id: s.stimulus for s in samples}
    assert all(s.frames_from is not None and stimulus[s.frames_from] != s.stimulus for s in samples)


def test_choose_decoder_trades_bleu_for_brain_dependence_within_the_tolerance():
    row = lambda n, w, own, perm, nuis: {"n_candidates": n, "encoding_weight": w, "valid_bleu1": own,
                                         "valid_bleu1_permuted": perm, "valid_bleu1_nuisance": nuis}
    table = [row(16, 1.0, 0.220, 0.219, 0.214),   # best BLEU-1, no brain dependence, +0.006 over length/position
             row(16, 10.0, 0.211, 0.180, 0.215),  # 4 % below the best, +0.031 over permuted frames, all nuisance
             row(16, 30.0, 0.180, 0.120, 0.150),  # the largest gains, but 18 % below the best
             row(4, 10.0, 0.211, 0.180, 0.215),   # the same as 16 candidates: fewer is cheaper
             row(8, 3.0, 0.212, 0.200, 0.200)]    # +0.012 over permuted, +0.012 over length/position
    assert choose_decoder(table, "bleu") == table[0]
    assert choose_decoder(table, "brain_gain", 0.05) == table[3]
    assert choose_decoder(table, "brain_gain", 0.25) == table[2]
    assert choose_decoder(table, "brain_gain", 0.0) == table[0]
    assert choose_decoder(table, "content_gain", 0.05) == table[4] == choose_decoder(table)
    # the length/position decoder keeps its own best λ: with 16 candidates it reaches 0.215 (at λ 10), so λ 30's
    # gain over that control at λ 30 (0.180 vs 0.150) is no gain
    assert choose_decoder(table, "content_gain", 0.25) == table[4]
    assert choose_decoder(table, "content_gain", 0.0) == table[0]
    assert best_nuisance_rows(table)[(None, "map", 16, 0, None)] == table[1]
    # and its own retrieval seeds: a seeded row of the same shared settings where the control does better
    seeded = table + [dict(table[2], seeded_sentences=3, valid_bleu1=0.1, valid_bleu1_nuisance=0.216)]
    assert best_nuisance_rows(seeded)[(None, "map", 16, 0, None)] == seeded[5]
    assert choose_decoder(seeded, "content_gain", 0.05) == table[4]
    with pytest.raises(ConfigError, match="criterion"):
        choose_decoder(table, "meteor")


def test_noise_trained_control_permutes_only_training_frames(tmp_path, tiny_llama_path, source_samples):
    ds = planted_dataset(tiny_llama_path, source_samples, 4.0)
    ds.save(tmp_path / "data")
    cfg = config.from_dict({"data": {"path": str(tmp_path / "data")},
                            "model": {"backbone": str(tiny_llama_path), "adapter": {"name": "mlp", "hidden": 32}},
                            "training": {"permute_frames": True, "cpu": True}, "output": str(tmp_path / "run")})
    trainer = training.Trainer(cfg)
    own = {s.id: s.frames for s in ds}
    by_id = {s.id: s.stimulus for s in ds}
    for s in trainer.train_samples:
        assert list(s.frame_rows) != own[s.id] and by_id[s.frames_from] != s.stimulus
        assert s.frames_from in set(trainer.split.train)  # another *training* sample's frames
    assert all(list(s.frame_rows) == own[s.id] and s.frames_from is None for s in trainer.valid_samples)


def test_nuisance_condition_and_decoder_identification(tmp_path, tiny_llama_path, source_samples):
    from brainllm.decoding.decoder_identification import decoder_crossscore
    from brainllm.decoding.generation import cross_losses
    from brainllm.evaluation.evaluate import evaluate_run
    from brainllm.evaluation.metrics import MetricConfig

    run = train_run(tmp_path, tiny_llama_path, planted_dataset(tiny_llama_path, source_samples, 4.0))
    tune(run, layers=[LAYER], dims=[None], shrinkages=[0.5], weights=[1.0], n_candidates=[3])
    run = load_run(tmp_path / "run")
    for condition in ("brain", "permuted", "nuisance"):
        generate_predictions(run, "test", condition)
    cross_losses(run, "test", 8)
    decoder_crossscore(run, "test")
    summary = evaluate_run(tmp_path / "run", metric_config=MetricConfig(semantic=False)).summary
    ident = summary["decoder_identification"]
    # frames planted from the tiny LM's layer-2 states: the encoding model identifies texts across stimuli
    assert ident["available"] and ident["encoding_model"]["across"] > 0.9
    assert "decoder_score" in ident and ident["decoder_score"]["n"] == 8
    # with a length/position decoder, the verdicts lead with whether content beyond it reaches the words
    assert "brain_vs_nuisance" in summary["comparisons"]
    assert summary["verdicts"][0].startswith("content beyond length/position in the decoded words")
    assert summary["verdicts"][1].startswith("vs PerBrainLLM")
    # the decoder's own distribution reads the planted frames: the true frames give the reference a lower loss
    posterior = summary["pairwise_accuracy"]["posterior_vs_permuted"]
    assert posterior["mean"] > POSTERIOR_PAIRWISE_FLOOR, posterior  # 0.74 here; the adapter's own loss: 0.54
    assert summary["comparisons"]["brain_vs_permuted"]["posterior_loss_nats"]["diff"] < 0
    assert any("Bayesian decoder's own distribution" in line for line in summary["verdicts"])
    # the length/position decoder's distribution against the same PerBrainLLM, by hand from the predictions files
    rows = {c: {r["id"]: r["posterior_loss"] for r in read_jsonl(tmp_path / "run" / "predictions" / f"test_{c}.jsonl")}
            for c in ("nuisance", "permuted")}
    by_hand = np.mean([rows["nuisance"][i] < rows["permuted"][i] for i in rows["nuisance"]])
    assert summary["pairwise_accuracy"]["nuisance_posterior_vs_permuted"]["mean"] == pytest.approx(by_hand)


def test_default_layers_follow_the_backbones_depth():
    from brainllm.experiments.decoder_tuning import default_layers

    assert default_layers(30) == [4, 8, 10, 12, 16, 24]  # SmolLM2-135M: the layers measured on real data
    assert default_layers(2) == [1, 2] and default_layers(12) == [2, 3, 4, 5, 6, 10]


def test_train_with_the_brain_recipe_tunes_the_decoder(tmp_path, tiny_llama_path, source_samples):
    from typer.testing import CliRunner

    from brainllm.cli import app

    planted_dataset(tiny_llama_path, source_samples, 4.0).save(tmp_path / "data")
    sets = [f"data.path={tmp_path / 'data'}", f"model.backbone={tiny_llama_path}", "model.adapter.hidden=32",
            "training.recipe=brain", "training.warmup_epochs=1", "training.epochs=1", "training.cpu=true",
            "generation.method=greedy", "generation.max_new_tokens=4", "generation.min_new_tokens=1",
            f"output={tmp_path / 'run'}"]
    result = CliRunner().invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "decoder.json").read_text())
    assert saved["generation"]["rerank"] == "encoding" and {r["layer"] for r in saved["cv_table"]} == {1, 2}
    assert load_run(tmp_path / "run").config.generation.rerank == "encoding"


def test_stored_candidates_resume_a_killed_decode_and_serve_the_nuisance_condition(tmp_path, tiny_llama_path,
                                                                                   source_samples, monkeypatch):
    import brainllm.decoding.candidates as candidates
    from brainllm.runpaths import RunPaths

    run = train_run(tmp_path, tiny_llama_path, planted_dataset(tiny_llama_path, source_samples, 4.0))
    tune(run, layers=[LAYER], dims=[None], shrinkages=[0.5], weights=[1.0], n_candidates=[3])
    run = load_run(tmp_path / "run")
    samples = run.encoder.encode_all(run.dataset, run.split.test)
    cfg = run.config.generation
    whole = candidates.propose(run, samples, "brain", cfg)
    real, proposed = candidates.propose, []

    def counted(run_, part, *args, **kwargs):
        proposed.append(len(part))
        if len(proposed) == 2 and kill[0]:
            raise KeyboardInterrupt  # killed while proposing the second chunk
        return real(run_, part, *args, **kwargs)

    kill = [True]
    monkeypatch.setattr(candidates, "propose", counted)
    store = tmp_path / "candidates.json"
    with pytest.raises(KeyboardInterrupt):
        candidates.propose_stored(run, samples, "brain", cfg, store, chunk=4)
    kill[0], proposed[:] = False, []
    resumed = candidates.propose_stored(run, samples, "brain", cfg, store, chunk=4)
    # the first chunk was kept, and the result is an uninterrupted decode's
    assert sum(proposed) == len(samples) - 4
    assert resumed.ids == whole.ids and resumed.texts == whole.texts
    for a, b in zip(resumed.lm, whole.lm):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert all(np.array_equal(a, b) for a, b in zip(resumed.draws, whole.draws))
    # other settings: nothing reused
    proposed[:] = []
    candidates.propose_stored(run, samples[:2], "brain", replace(cfg, seed=cfg.seed + 1), store)
    assert proposed == [2]
    # generate: the length/position decoder re-picks the brain condition's candidates, proposing nothing
    generate_predictions(run, "test", "brain")
    proposed[:] = []
    path = generate_predictions(run, "test", "nuisance")
    assert proposed == []
    stored = json.loads(RunPaths(run.path).candidates("test").read_text())["samples"]
    by_id = {s.id: f"{s.id}@{','.join(map(str, s.frame_rows))}" for s in samples}
    for row in read_jsonl(path):
        assert row["prediction"] in {run.encoder.decode(c) for c in stored[by_id[row["id"]]]["ids"]}


def test_a_killed_generate_keeps_its_finished_conditions(tmp_path, tiny_llama_path, source_samples, monkeypatch):
    import shutil

    import brainllm.decoding.candidates as candidates
    import brainllm.decoding.generation as generation

    train_run(tmp_path, tiny_llama_path, planted_dataset(tiny_llama_path, source_samples, 4.0))
    tune(load_run(tmp_path / "run"), layers=[LAYER], dims=[None], shrinkages=[0.5], weights=[1.0], n_candidates=[3])
    shutil.copytree(tmp_path / "run", tmp_path / "uninterrupted")
    conditions = ("brain", "permuted")
    want = {c: read_jsonl(generate_predictions(load_run(tmp_path / "uninterrupted"), "test", c)) for c in conditions}

    run = load_run(tmp_path / "run")
    real_propose, real_losses, calls = candidates.propose, generation.teacher_forced_losses, []

    def propose(*args, **kwargs):
        calls.append("propose")
        if kill[0]:
            raise KeyboardInterrupt  # what a kill -9 leaves: the atomic writes before it, nothing after
        return real_propose(*args, **kwargs)

    def losses(*args, **kwargs):
        calls.append("losses")
        return real_losses(*args, **kwargs)

    monkeypatch.setattr(candidates, "propose", propose)
    monkeypatch.setattr(generation, "teacher_forced_losses", losses)
    kill = [False]
    generate_predictions(run, "test", "brain")
    kill[0] = True
    with pytest.raises(KeyboardInterrupt):
        generate_predictions(run, "test", "permuted")  # killed in its first condition after brain
    kill[0], calls[:] = False, []
    got = {c: read_jsonl(generate_predictions(run, "test", c)) for c in conditions}  # the same command again
    assert calls.count("losses") == 1  # brain was kept: only the permuted condition ran
    for c in conditions:
        assert [r["prediction"] for r in got[c]] == [r["prediction"] for r in want[c]]
        np.testing.assert_allclose([r["loss"] for r in got[c]], [r["loss"] for r in want[c]], atol=1e-5)
    # other settings decode again
    calls[:] = []
    generate_predictions(run, "test", "brain", replace(run.config.generation, seed=1))
    assert "losses" in calls


def test_a_killed_tuning_resumes_from_its_finished_cells(tmp_path, tiny_llama_path, source_samples, monkeypatch):
    import shutil

    import brainllm.decoding.candidates as candidates
    import brainllm.decoding.encoding_choice as encoding_choice

    train_run(tmp_path, tiny_llama_path, planted_dataset(tiny_llama_path, source_samples, 4.0))
    shutil.copytree(tmp_path / "run", tmp_path / "uninterrupted")
    grid = dict(layers=[1, LAYER], dims=[None, 20], shrinkages=[0.5], weights=[0.0, 1.0], n_candidates=[1, 3],
                nuisance_weights=[1.0], context_sentences=[0])
    want = tune(load_run(tmp_path / "uninterrupted"), **grid)
    n_cells = len(want["cv_table"]) + len(want["nuisance_cv_table"])

    run = load_run(tmp_path / "run")
    real_identification, real_propose, calls = encoding_choice.two_way, candidates.propose, []

    def two_way(*args, **kwargs):  # one call per fold of a CV cell (5 folds)
        calls.append("fold")
        if kill_at[0] and calls.count("fold") == kill_at[0]:
            raise KeyboardInterrupt
        return real_identification(*args, **kwargs)

    def propose(run_, samples, *args, **kwargs):
        calls.append(("propose", len(samples)))
        if kill_at[1] and len([c for c in calls if c != "fold"]) == kill_at[1]:
            raise KeyboardInterrupt
        return real_propose(run_, samples, *args, **kwargs)

    monkeypatch.setattr(encoding_choice, "two_way", two_way)
    monkeypatch.setattr(candidates, "propose", propose)
    kill_at = [2 * 5 + 3, 0]  # in the third CV cell
    with pytest.raises(KeyboardInterrupt):
        tune(run, **grid)
    kill_at, calls[:] = [0, 2], []  # again; killed when proposing the permuted frames' candidates
    with pytest.raises(KeyboardInterrupt):
        tune(run, **grid)
    assert calls.count("fold") == (n_cells - 2) * 5  # the two finished cells were read back
    kill_at, calls[:] = [0, 0], []
    got = tune(run, **grid)  # the same command, a third time
    assert calls.count("fold") == 0 and [c for c in calls if c != "fold"] == [("propose", len(run.split.valid))]
    assert got["generation"] == want["generation"] and got["cv_table"] == want["cv_table"]
    assert got["encoding_model"] == want["encoding_model"]
    for a, b in zip(got["valid_table"], want["valid_table"]):
        assert a.keys() == b.keys() and all(a[k] == b[k] if isinstance(a[k], str) else
                                           np.isclose(a[k], b[k], atol=1e-6, equal_nan=True) for k in a)
