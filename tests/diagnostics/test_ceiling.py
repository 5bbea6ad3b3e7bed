import json

import numpy as np
import pytest
import torch

from brainllm.errors import BrainLLMError
from brainllm.diagnostics.ceiling import ceiling, oracle_vectors, scaled_oracle
from brainllm.decoding.generation import teacher_forced_losses
from tests.decoding.test_generation import trained_run  # noqa: F401  (the fixture: a tiny trained run)


def test_oracle_vector_is_the_centred_mean_embedding_of_the_continuation(trained_run):  # noqa: F811
    samples = trained_run.encoder.encode_all(trained_run.dataset, trained_run.split.valid[:3])
    weight = trained_run.model.backbone.get_input_embeddings().weight.detach().numpy()
    centre = np.arange(weight.shape[1], dtype=np.float32)
    got = oracle_vectors(trained_run, samples, centre)
    for s, row in zip(samples, got):
        ids = trained_run.encoder.tokenizer(" " + trained_run.dataset.by_id(s.id).continuation,
                                            add_special_tokens=False).input_ids  # with its leading space
        assert list(s.continuation_ids) == ids
        np.testing.assert_allclose(row, weight[ids].mean(0) - centre, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_scale_zero_changes_nothing(trained_run, threads):  # noqa: F811
    # one BLAS thread or two: the same losses differ by float noise across batches, which must tie
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        report = ceiling(trained_run, "valid", scales=[0.0], max_samples=5)
    finally:
        torch.set_num_threads(before)
    row = report.rows[0]
    assert report.n_samples == 5 and row.delta == pytest.approx(0.0, abs=1e-6)
    assert row.identification == pytest.approx(0.5)  # every pairing ties
    assert row.own_loss == pytest.approx(report.baseline_loss, rel=1e-5)


def test_pair_i_j_is_text_i_with_vector_j(trained_run):  # noqa: F811
    from brainllm.decoding.generation import pick_samples

    report = ceiling(trained_run, "test", scales=[0.5], max_samples=4)
    ids = pick_samples(trained_run, "test", 4)
    samples = trained_run.encoder.encode_all(trained_run.dataset, ids)
    vec, adapter_norm = scaled_oracle(trained_run, samples)
    assert np.linalg.norm(vec, axis=1).mean() == pytest.approx(adapter_norm, rel=1e-5)
    # text 0 with the vector of sample 2, by hand through the model's brain_offset
    by_hand = teacher_forced_losses(trained_run, samples[:1], "brain", 1, 0.5 * vec[2:3])[0]
    losses = [teacher_forced_losses(trained_run, samples[i:i + 1], "brain", 1, 0.5 * vec[j:j + 1])[0]
              for i in range(4) for j in range(4)]
    matrix = np.asarray(losses).reshape(4, 4)
    assert matrix[0, 2] == pytest.approx(by_hand)
    own, others = np.diag(matrix), (matrix.sum(1) - np.diag(matrix)) / 3
    assert report.rows[0].own_loss == pytest.approx(own.mean(), rel=1e-4)
    assert report.rows[0].delta == pytest.approx((own - others).mean(), abs=1e-4)


def test_a_backbone_that_reads_the_slots_perfectly_reaches_the_ceiling(trained_run, monkeypatch):  # noqa: F811
    """Planted: a stand-in backbone whose loss is 1 when the slot offset is the text's own oracle vector and 2
    otherwise. Own vector: loss 1; another sample's: 2. The summary must say so exactly."""
    import brainllm.diagnostics.ceiling as C

    scale = 0.4

    def reads_perfectly(run, samples, layout, batch_size, brain_offsets=None):
        if brain_offsets is None:
            return np.full(len(samples), 3.0)
        own = scale * scaled_oracle(run, samples)[0]
        return 1.0 + (np.linalg.norm(brain_offsets - own, axis=1) > 1e-4)  # own vector (up to float32) or not

    monkeypatch.setattr(C, "teacher_forced_losses", reads_perfectly)
    report = C.ceiling(trained_run, "test", scales=[scale], max_samples=6, tokens=False)
    row = report.rows[0]
    assert report.baseline_loss == 3.0 and report.n_stimuli >= 2
    assert (row.own_loss, row.other_loss, row.delta, row.identification) == pytest.approx((1.0, 2.0, -1.0, 1.0))
    assert row.p == pytest.approx(2 / 2 ** report.n_stimuli)  # exact sign-flip over stimuli: all same sign


def test_cli_writes_the_report_and_refuses_a_split_of_one(trained_run, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from brainllm.cli import app

    res = CliRunner().invoke(app, ["ceiling", str(trained_run.path), "--scale", "0", "--scale", "1",
                                   "--max-samples", "4"])
    assert res.exit_code == 0, res.output
    data = json.loads((trained_run.path / "evaluation" / "ceiling_valid.json").read_text())
    assert [r["scale"] for r in data["rows"]] == [0.0, 1.0] and data["split"] == "valid"
    assert "loss without oracle" in res.output
    from brainllm.diagnostics.ceiling import DEFAULT_SCALES

    res = CliRunner().invoke(app, ["ceiling", str(trained_run.path), "--max-samples", "3"])
    assert res.exit_code == 0, res.output  # no --scale: the library's scales, not a copy of them
    data = json.loads((trained_run.path / "evaluation" / "ceiling_valid.json").read_text())
    assert [r["scale"] for r in data["rows"]] == list(DEFAULT_SCALES)
    with pytest.raises(BrainLLMError, match="at least 2"):
        ceiling(trained_run, "valid", max_samples=1)


def test_brain_slots_replace_the_adapter_outputs_exactly(trained_run):  # noqa: F811
    import torch

    from brainllm.model import Collator
    from brainllm.model.collate import BRAIN

    samples = trained_run.encoder.encode_all(trained_run.dataset, trained_run.split.valid[:2])
    batch = Collator(trained_run.dataset.frames, trained_run.encoder, "brain")(samples)
    slots = torch.randn(*batch.frame_mask.shape, trained_run.model.hidden_size)
    with torch.no_grad():
        with trained_run.model.overriding_brain(slots=slots):
            emb = trained_run.model.embed(batch).float()
        plain = trained_run.model.embed(batch).float()
    for i in range(len(samples)):
        at = (batch.kind[i] == BRAIN).nonzero().ravel()
        torch.testing.assert_close(emb[i, at], slots[i, batch.brain_pos[i, at]])
        others = batch.kind[i] != BRAIN
        torch.testing.assert_close(emb[i, others], plain[i, others])  # tokens and boundaries untouched
    with pytest.raises(ValueError, match="do not match"), trained_run.model.overriding_brain(slots=slots[:, :0]):
        trained_run.model.embed(batch)


def test_ridge_decodes_planted_tokens_from_training_samples_only():
    """Planted: each sample's two frames are a fixed linear code of the bag of its three continuation tokens plus a
    little noise. The decoder, trained on the training samples, must name the probe samples' tokens far better
    than the most frequent tokens do, without ever seeing a probe sample."""
    from types import SimpleNamespace

    from brainllm.diagnostics.ceiling import ridge_decoded_tokens
    from brainllm.ridge import CV_ALPHAS
    from brainllm.model import EncodedSample

    rng = np.random.default_rng(0)
    n_vocab, n_train, n_probe = 30, 240, 40
    code = rng.standard_normal((n_vocab, 2 * 25))
    popularity = 1.0 / np.arange(1, n_vocab + 1)  # Zipf: a frequency guess is not hopeless
    samples, frames = [], []
    for i in range(n_train + n_probe):
        tokens = rng.choice(n_vocab, 3, replace=False, p=popularity / popularity.sum())
        bag = np.zeros(n_vocab)
        bag[tokens] = 1
        frames += list((bag @ code + 0.1 * rng.standard_normal(50)).reshape(2, 25))
        samples.append(EncodedSample(f"s{i}", f"story{i // 20}", (), tuple(int(t) + 100 for t in tokens),
                                     (2 * i, 2 * i + 1)))
    train, probe = samples[:n_train], samples[n_train:]
    run = SimpleNamespace(dataset=SimpleNamespace(frames=np.asarray(frames)))
    decoded, frequency_precision, info = ridge_decoded_tokens(run, train, probe)
    precision = np.mean([np.isin(d, s.continuation_ids).mean() for d, s in zip(decoded, probe)])
    assert all(len(d) == 2 for d in decoded) and info["alpha"] in CV_ALPHAS
    assert info["vocabulary"] <= n_vocab and info["train_samples"] == n_train
    assert precision > 0.9 and precision > frequency_precision + 0.3


def test_true_tokens_reach_the_ceiling_with_a_backbone_that_reads_them(trained_run, monkeypatch):  # noqa: F811
    """Planted: loss 1 when a text's slots hold its own continuation tokens, 2 otherwise; the true-token row must
    say delta -1 and identification 1, and carry precision 1."""
    import brainllm.diagnostics.ceiling as C

    def reads_tokens(run, samples, layout, batch_size, brain_offsets=None, brain_slots=None):
        if brain_slots is None:
            return np.full(len(samples), 3.0)
        own = C._token_slots(run, samples, [list(s.continuation_ids) for s in samples])
        return np.asarray([1.0 if np.array_equal(a, b) else 2.0 for a, b in zip(brain_slots, own)])

    monkeypatch.setattr(C, "teacher_forced_losses", reads_tokens)
    report = C.ceiling(trained_run, "test", scales=[], max_samples=6)
    true, ridge = report.token_rows
    assert true.oracle == "true tokens" and ridge.oracle == "ridge-decoded tokens"
    assert (true.delta, true.identification, true.precision) == pytest.approx((-1.0, 1.0, 1.0))
    assert 0.0 <= ridge.precision <= 1.0 and report.ridge["train_samples"] == len(trained_run.split.train)
    assert "Token oracles" in report.table()
