"""The retrieval baseline: on frames planted from their sentence's text (the sentence task: no prompt), it looks
the sentence up among others; its grouped scores equal the encoding model's own per sample; its default pool is the
encoding model's training texts, never a test one; `generate --condition retrieval` writes rows without a loss and
the evaluation compares BrainLLM with it on the text alone; the sentence task's tuning tries the pool-mbr rule, whose
picks are the decoder's candidates, and the look-up then decides by the same rule."""

from dataclasses import replace

import numpy as np
import pytest

from brainllm.decoding.bayes import bayes_decode, encoding_scores, score_candidates
from brainllm.decoding.encoding_model import load_scorer
from brainllm.decoding.generation import generate_predictions
from brainllm.decoding.pool_mbr import PoolMBR
from brainllm.decoding.retrieval import retrieval_pool, retrieval_scores, retrieve
from brainllm.experiments.decoder_tuning import tune
from brainllm.io import read_jsonl
from brainllm.runs import load_run
from tests.decoding.test_bayes import LAYER, fitted_scorer, planted_dataset, train_run


@pytest.fixture(scope="module")
def sentence_samples():
    from brainllm.data.simulate import simulate

    return list(simulate(design="sentence", task="sentence", passages=30, voxels=64, components=8, seed=2).dataset)


def test_retrieval_finds_the_planted_sentence(tmp_path, tiny_llama_path, sentence_samples):
    run = train_run(tmp_path, tiny_llama_path, planted_dataset(tiny_llama_path, sentence_samples, 4.0))
    scorer = fitted_scorer(run)
    samples = run.encoder.encode_all(run.dataset, run.split.test)
    truth = [run.dataset.by_id(s.id).continuation for s in samples]
    assert all(run.dataset.by_id(s.id).prompt == "" for s in samples)
    scores = retrieval_scores(run, scorer, samples, truth)
    # one pass over the pool for all samples (one shared empty prompt) = the encoding model sample by sample
    by_sample = encoding_scores(run, scorer, samples, [truth] * len(samples), shared_prefix=False)
    np.testing.assert_allclose(scores, np.stack(by_sample), rtol=1e-5, atol=1e-3)
    found = float(np.mean(np.argmax(scores, axis=1) == np.arange(len(truth))))
    assert found > 0.8, found  # among the test sentences, by their planted frames (chance 1/len(truth))
    got = retrieve(run, scorer, samples)
    pool = set(retrieval_pool(run))
    assert pool == {run.dataset.by_id(i).continuation for i in run.split.train}
    assert set(got) <= pool and not set(got) & set(truth)


def test_generate_and_evaluate_the_retrieval_condition(tmp_path, tiny_llama_path, sentence_samples):
    from brainllm.evaluation.evaluate import evaluate_run
    from brainllm.evaluation.metrics import LOSS, MetricConfig

    dataset = planted_dataset(tiny_llama_path, sentence_samples, 4.0)
    dataset.meta["task"] = "sentence"  # as the simulator records it
    run = train_run(tmp_path, tiny_llama_path, dataset)
    result = tune(run, layers=[LAYER], dims=[None], shrinkages=[0.5], weights=[1.0], n_candidates=[3],
                  temperatures=[1.0])
    # the sentence task tries pool-mbr beside MAP and MBR, and chooses by BLEU-1 + MiniLM (every row has both)
    table = result["valid_table"]
    assert {r["pick"] for r in table} == {"map", "mbr", "pool-mbr"} and result["criterion"] == "meaning_gain"
    assert {r["mbr_meaning_weight"] for r in table if r["pick"] == "pool-mbr"} == {0.3, 0.7}
    assert all(-1 <= r[f"valid_minilm{s}"] <= 1 for r in table for s in ("", "_permuted", "_nuisance"))
    run = load_run(tmp_path / "run")
    for condition in ("brain", "permuted", "retrieval"):
        generate_predictions(run, "test", condition)
    rows = read_jsonl(tmp_path / "run" / "predictions" / "test_retrieval.jsonl")
    pool = set(retrieval_pool(run))  # refitted on training + validation by default
    assert all(r["loss"] is None and r["prediction"] in pool for r in rows)
    # a decoder that picks by pool-mbr: its texts are its candidates', and the look-up decides by the same rule
    cfg = replace(run.config.generation, pick="pool-mbr", pool_mbr_top=5)
    samples = run.encoder.encode_all(run.dataset, run.split.test)
    texts, _ = bayes_decode(run, samples, "brain", cfg)
    cands = score_candidates(run, samples, "brain", cfg, load_scorer(run))
    assert all(t in c for t, c in zip(texts, cands.texts))
    looked_up = retrieve(run, load_scorer(run), samples, rule=PoolMBR.of(cfg))
    assert set(looked_up) <= pool
    summary = evaluate_run(tmp_path / "run", metric_config=MetricConfig(semantic=False)).summary
    versus = summary["comparisons"]["brain_vs_retrieval"]
    assert LOSS not in versus and "bleu1_per_sample" in versus
    line = next(line for line in summary["verdicts"] if line.startswith("generation vs look-up"))
    # the line names how the baseline looked up: by the decoder's own rule where that is pool-mbr
    assert ("pool-mbr" in line) == (summary["decoding"]["retrieval"]["pick"] == "pool-mbr")
    assert summary["task"] == "sentence"
