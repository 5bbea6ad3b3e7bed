"""Retrieval-seeded candidates: a draw is cut at its first sentence end; on planted frames the retrieved sentence
nearest the continuation is the sample's own far more often than under permuted frames, and the sample's prompt
comes after the retrieved text; each seeded text is read back as a continuation of the sample's own prompt, with
the LM score under that prompt (not under the retrieved text); the texts join every pick; tuning tries seeds
against none and `generate` decodes with the choice."""

import json
from dataclasses import replace

import numpy as np
import pytest

from brainllm.decoding.bayes import bayes_decode, score_candidates
from brainllm.decoding.candidates import lm_scores
from brainllm.decoding.retrieval import retrieval_pool
from brainllm.decoding.seeded import first_sentence, retrieved_prompts, seeded_proposals
from brainllm.model.collate import permute_frames
from tests.decoding.test_bayes import (LAYER, fitted_scorer, planted_dataset, save_scorers,  # noqa: F401
                                       source_samples, train_run)
from tests.decoding.test_guided import sentence_samples  # noqa: F401


def test_first_sentence_cuts_at_the_first_sentence_end():
    assert first_sentence("The dog ran. Then it sat.") == "The dog ran."
    assert first_sentence('  He said "stop!" Then he left.') == 'He said "stop!"'
    assert first_sentence("Is it 3.5 metres? Yes.") == "Is it 3.5 metres?"
    assert first_sentence("no end at all") == "no end at all"
    assert first_sentence("Ends here.") == "Ends here."
    assert first_sentence("   ") == ""


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory, tiny_llama_path, source_samples):  # noqa: F811
    root = tmp_path_factory.mktemp("seeded")
    run = train_run(root, tiny_llama_path, planted_dataset(tiny_llama_path, source_samples, 4.0))
    scorer = fitted_scorer(run)
    return run, scorer


def test_planted_frames_retrieve_their_own_sentence_last_and_the_prompt_follows(planted_run):
    run, scorer = planted_run
    test = run.encoder.encode_all(run.dataset, run.split.test)
    own = [run.dataset.by_id(s.id) for s in test]
    pool = retrieval_pool(run, ("train",)) + [s.continuation.strip() for s in own]
    prompts = retrieved_prompts(run, test, scorer, 2, pool)
    # the sample's own prompt closes the text BrainLLM continues; the likeliest sentence stands just before it
    assert all(p.endswith(s.prompt.strip()) for p, s in zip(prompts, own))
    nearest = [p[: len(p) - len(s.prompt.strip())].strip().endswith(s.continuation.strip())
               for p, s in zip(prompts, own)]
    permuted = permute_frames(test, 0)
    shuffled = retrieved_prompts(run, permuted, scorer, 2, pool)
    wrong = [p[: len(p) - len(s.prompt.strip())].strip().endswith(s.continuation.strip())
             for p, s in zip(shuffled, own)]
    # chance is one in the pool (about 1 %)
    assert np.mean(nearest) >= 0.4 and np.mean(wrong) <= 0.1, (np.mean(nearest), np.mean(wrong))


def test_seeded_texts_are_sentences_scored_under_the_samples_own_prompt(planted_run):
    run, scorer = planted_run
    samples = run.encoder.encode_all(run.dataset, run.split.test)[:6]
    cfg = replace(run.config.generation, rerank="encoding", seeded_sentences=2, seeded_draws=5, max_new_tokens=12,
                  temperature=1.5)
    ids, lm = seeded_proposals(run, samples, "brain", cfg, scorer, retrieval_pool(run, ("train",)))
    assert sum(len(g) for g in ids) > len(samples)  # draws beyond the search result survive
    for s, group, scores in zip(samples, ids, lm):
        texts = [run.encoder.decode(c) for c in group]
        assert texts and len(set(texts)) == len(texts) and all(first_sentence(t) == t for t in texts)
        prompt = run.dataset.by_id(s.id).prompt
        assert all(list(c) == run.encoder.split_ids(prompt, t)[1] for c, t in zip(group, texts))
        assert scores.shape == (len(group),)
    # the prior is BrainLLM's under the sample's own prompt, as for every candidate
    np.testing.assert_allclose(np.concatenate(lm), np.concatenate(lm_scores(run, samples, ids, "brain", 16)),
                               rtol=1e-5)


def test_seeded_texts_join_every_pick_also_for_the_nuisance_decoder(planted_run):
    run, scorer = planted_run
    save_scorers(run, scorer)
    samples = run.encoder.encode_all(run.dataset, run.split.test)[:6]
    cfg = replace(run.config.generation, rerank="encoding", n_candidates=3, seeded_sentences=2, seeded_draws=3,
                  encoding_weight=5.0, max_new_tokens=8)
    cands = score_candidates(run, samples, "brain", cfg, scorer)
    plain = score_candidates(run, samples, "brain", replace(cfg, seeded_sentences=0), scorer)
    assert cands.proposed == [len(t) for t in plain.texts]
    assert all(len(t) > p for t, p in zip(cands.texts, cands.proposed))
    for a, b, p in zip(cands.encoding, plain.encoding, cands.proposed):
        np.testing.assert_allclose(a[:p], b, rtol=1e-6)
    # with one proposed candidate, the seeded ones still compete
    assert all(len(cands.considered(i, 1)) > 1 for i in range(len(samples)))
    texts, _ = bayes_decode(run, samples, "brain", cfg)
    assert texts == cands.picks(5.0)
    by_nuisance, _ = bayes_decode(run, samples, "brain", cfg, scorer="nuisance")
    assert len(by_nuisance) == len(samples)


def test_tuning_tries_seeds_and_generate_decodes_with_the_choice(tmp_path, tiny_llama_path,
                                                                 sentence_samples):  # noqa: F811
    from brainllm.decoding.generation import generate_predictions
    from brainllm.errors import ConfigError
    from brainllm.experiments.decoder_tuning import tune
    from brainllm.io import read_json, read_jsonl
    from brainllm.runs import load_run

    dataset = planted_dataset(tiny_llama_path, sentence_samples, 4.0)
    dataset.meta["task"] = "sentence"
    run = train_run(tmp_path, tiny_llama_path, dataset)
    with pytest.raises(ConfigError, match="seeded_sentences"):
        tune(run, layers=[LAYER], seeded_sentences=[-1])
    result = tune(run, layers=[LAYER], dims=[None], shrinkages=[0.5], weights=[0.0, 3.0], n_candidates=[1, 3],
                  temperatures=[1.0], picks=["map"], seeded_sentences=None)  # the sentence task's default: 0 and 3
    table = result["valid_table"]
    assert sorted((r["seeded_sentences"], r["encoding_weight"], r["n_candidates"]) for r in table) == \
        [(0, 0.0, 1), (0, 0.0, 3), (0, 3.0, 1), (0, 3.0, 3), (3, 0.0, 1), (3, 0.0, 3), (3, 3.0, 1), (3, 3.0, 3)]
    assert result["generation"]["seeded_sentences"] in (0, 3)
    assert result["generation"]["nuisance_seeded_sentences"] in (0, 3)
    chosen = dict(result["generation"], seeded_sentences=3, encoding_weight=3.0, nuisance_encoding_weight=0.0,
                  nuisance_seeded_sentences=0)
    decoder = read_json(tmp_path / "run" / "decoder.json") | {"generation": chosen}
    (tmp_path / "run" / "decoder.json").write_text(json.dumps(decoder))
    run = load_run(tmp_path / "run")
    assert run.config.generation.seeded_sentences == 3
    for condition in ("brain", "nuisance", "permuted"):
        generate_predictions(run, "test", condition)
        rows = read_jsonl(tmp_path / "run" / "predictions" / f"test_{condition}.jsonl")
        assert len(rows) == len(run.split.test) and all(isinstance(r["prediction"], str) for r in rows)
        # the length/position decoder picks with its own λ and seeds
        decoding = read_json(tmp_path / "run" / "predictions" / f"test_{condition}.json")["decoding"]
        own = condition == "nuisance"
        assert (decoding["encoding_weight"], decoding["seeded_sentences"]) == ((0.0, 0) if own else (3.0, 3))
