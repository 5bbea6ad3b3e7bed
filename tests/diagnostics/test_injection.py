import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from brainllm.errors import BrainLLMError
from brainllm.diagnostics.injection import continuation_states, injected_losses
from brainllm.ridge import centred_correlation
from brainllm.model.injection import on_output
from brainllm.decoding.generation import input_layout, teacher_forced_losses
from brainllm.model import Collator
from brainllm.model.collate import BRAIN
from tests.decoding.test_generation import trained_run  # noqa: F401  (a tiny trained run, sentence design)
from tests.decoding.test_bayes import LAYER, planted_dataset, source_samples, train_run  # noqa: F401


def test_continuation_states_are_the_lms_hidden_states_after_that_many_layers(trained_run):  # noqa: F811
    samples = trained_run.encoder.encode_all(trained_run.dataset, trained_run.split.valid[:3])
    got = continuation_states(trained_run, samples, [1, 2])[1]  # (HF applies the final norm to its last entry)
    bos = [trained_run.encoder.bos_id] if trained_run.encoder.bos_id is not None else []
    for s, row in zip(samples, got):
        ids = torch.tensor([bos + list(s.prompt_ids) + list(s.continuation_ids)])
        with torch.no_grad():
            hidden = trained_run.model.backbone(input_ids=ids, output_hidden_states=True).hidden_states[1]
        np.testing.assert_allclose(row, hidden[0, -len(s.continuation_ids):].mean(0).numpy(), rtol=1e-4, atol=1e-5)


def test_injecting_the_states_the_brain_positions_had_changes_nothing(trained_run):  # noqa: F811
    """Each sample has one brain position: capture its state after layer 1 in a plain forward, inject it back
    (same losses), then inject other vectors (every loss changes): the hook replaces exactly the brain positions."""
    samples = trained_run.encoder.encode_all(trained_run.dataset, trained_run.split.valid[:4])
    layout = input_layout(trained_run, "brain")
    batch = Collator(trained_run.dataset.frames, trained_run.encoder, layout)(samples)
    assert ((batch.kind == BRAIN).sum(1) == 1).all()
    captured = []
    with torch.no_grad(), on_output(trained_run.model.decoder_layer(1), captured.append):
        trained_run.model(batch)
    own = captured[0][batch.kind == BRAIN].numpy()  # (4, H), row order = samples
    plain = teacher_forced_losses(trained_run, samples, layout, 16)
    np.testing.assert_allclose(injected_losses(trained_run, samples, 1, own), plain, rtol=1e-4)
    other = own + 10 * np.random.default_rng(0).standard_normal(own.shape).astype(np.float32)
    assert np.abs(injected_losses(trained_run, samples, 1, other) - plain).min() > 1e-3


def test_centred_correlation_by_hand():
    centre = np.array([1.0, 1.0, 1.0])
    truth = np.array([[2.0, 1.0, 0.0]])
    assert centred_correlation(np.array([[3.0, 1.0, -1.0]]), truth, centre) == pytest.approx(1.0)
    assert centred_correlation(np.array([[0.0, 1.0, 2.0]]), truth, centre) == pytest.approx(-1.0)


def test_state_oracles_in_the_ceiling_report(trained_run):  # noqa: F811
    from brainllm.diagnostics.ceiling import ceiling
    from brainllm.ridge import CV_ALPHAS

    report = ceiling(trained_run, "valid", scales=[], max_samples=5, tokens=False, layers=[1])
    true, ridge = report.state_rows
    assert (true.layer, true.oracle, ridge.oracle) == (1, "true mean state", "ridge-decoded state")
    assert true.correlation == 1.0 and true.ridge_alpha is None and true.cv_correlation is None
    assert ridge.ridge_alpha in CV_ALPHAS and -1 <= ridge.correlation <= 1 and ridge.cv_correlation is not None
    assert np.isfinite([true.delta, ridge.delta, true.identification]).all()
    assert "State oracles" in report.table()
    json.dumps(asdict(report), allow_nan=False)  # strict JSON: "not applicable" is null, never NaN
    with pytest.raises(BrainLLMError, match="layer must be in"):
        trained_run.model.decoder_layer(99)
    with pytest.raises(BrainLLMError, match="layer must be in 1..2"):
        ceiling(trained_run, "valid", scales=[], max_samples=5, tokens=False, layers=[0])


def test_the_ceiling_refuses_an_injecting_run(trained_run, monkeypatch):  # noqa: F811
    """Its oracles replace input-embedding slots, which an injecting run no longer reads."""
    from brainllm.diagnostics.ceiling import ceiling

    monkeypatch.setattr(trained_run.model, "inject_layer", 1)
    with pytest.raises(BrainLLMError, match="injects its adapter outputs after layer 1"):
        ceiling(trained_run, "valid", scales=[0.1], max_samples=5, tokens=False)


def test_frames_that_encode_their_text_retrieve_its_state(tmp_path, tiny_llama_path, source_samples):
    """Retrieval by the encoding model, held out: the scorer is fitted on training samples, the bank holds the test
    samples' texts with one-hot "states" (so a retrieved vector's argmax names the text weighted most). Planted
    frames retrieve their own sentence; noise frames do not."""
    from brainllm.decoding.decoder_identification import cross_log_likelihoods
    from brainllm.decoding.encoding_choice import choose_encoding_model
    from brainllm.decoding.encoding_model import SentenceScorer, positions_of, reference_texts
    from brainllm.diagnostics.injection import retrieval_weights, retrieved_states

    def own_sentence_rate(snr, path):
        run = train_run(path, tiny_llama_path, planted_dataset(tiny_llama_path, source_samples, snr))
        train = run.encoder.encode_all(run.dataset, run.split.train)
        scorer = SentenceScorer(run, *choose_encoding_model(run, train, [LAYER], [None], [0.5])[:2])
        test = run.encoder.encode_all(run.dataset, run.split.test)
        scores = cross_log_likelihoods(run, scorer, test, test)
        positions = positions_of(run, test)
        texts = reference_texts(run, test)
        for i, j in ((0, 1), (3, 2), (4, 4)):  # [i, j]: text i scored against frames j at frames j's position
            assert scores[i, j] == pytest.approx(scorer.log_likelihood([texts[i]], [positions[j]],
                                                                       scorer.frames([test[j]]))[0])
        weights, neighbours = retrieval_weights(run, scorer, test, test, sharpness=10.0)
        retrieved = retrieved_states(weights, np.eye(len(test)))
        assert 1.0 <= neighbours < len(test)
        best = retrieved.argmax(1)  # the two samples of a sentence share its frames: either is its own sentence
        return np.mean([test[b].frame_rows == s.frame_rows for b, s in zip(best, test)]), 2 / len(test)

    planted, chance = own_sentence_rate(4.0, tmp_path / "planted")
    assert planted > 0.8
    noise, chance = own_sentence_rate(None, tmp_path / "noise")
    assert noise < chance + 0.2


def test_the_ceiling_adds_the_retrieved_state_when_the_run_has_an_encoding_model(trained_run, monkeypatch):  # noqa: F811
    from brainllm.decoding.encoding_choice import choose_encoding_model
    from brainllm.decoding.encoding_model import SentenceScorer
    from brainllm.diagnostics import ceiling as ceiling_module

    train = trained_run.encoder.encode_all(trained_run.dataset, trained_run.split.train)
    scorer = SentenceScorer(trained_run, *choose_encoding_model(trained_run, train, [1], [None], [0.5])[:2])
    monkeypatch.setattr(ceiling_module, "has_scorer", lambda run: True)
    monkeypatch.setattr(ceiling_module, "load_scorer", lambda run: scorer)
    report = ceiling_module.ceiling(trained_run, "valid", scales=[], max_samples=5, tokens=False, layers=[1])
    assert [r.oracle for r in report.state_rows] == ["true mean state", "ridge-decoded state", "retrieved state"]
    retrieved = report.state_rows[2]
    assert retrieved.neighbours >= 1 and retrieved.ridge_alpha is None and -1 <= retrieved.correlation <= 1
    assert np.isfinite(retrieved.delta) and "neighbours" in report.table()
    # an encoding model refitted on the validation samples would retrieve them in-sample: no row then
    monkeypatch.setattr(ceiling_module, "scorer_splits", lambda run: ("train", "valid"))
    report = ceiling_module.ceiling(trained_run, "valid", scales=[], max_samples=5, tokens=False, layers=[1])
    assert [r.oracle for r in report.state_rows] == ["true mean state", "ridge-decoded state"]
