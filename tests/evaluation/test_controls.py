"""Verdict lines name the control, the test and its p; the decoder's identification centres each text's score."""

import numpy as np

from brainllm.evaluation.controls import decoder_identification, verdicts


def comparison(diff, p):
    return {"diff": diff, "p_signflip_stimuli": p}


def test_verdicts_name_control_test_and_p():
    summary = {"comparisons": {
        "brain_vs_permuted": {"loss_nats": comparison(-0.05, 0.001), "bleu1_per_sample": comparison(0.01, 0.4)},
        "brain_vs_no_brain": {"loss_nats": comparison(-1.2, 0.0001), "bleu1_per_sample": comparison(0.05, 0.001)},
        "brain_vs_nuisance": {"loss_nats": comparison(0.0, 1.0), "bleu1_per_sample": comparison(0.002, 0.3)}},
        "pairwise_accuracy": {"vs_permuted": {"mean": 0.61, "p_signflip_stimuli": 0.002}}}
    lines = verdicts(summary)
    # the content line leads: BLEU-1 against the length/position decoder, the only text metric given here
    assert lines[0].startswith("content beyond length/position in the decoded words: not detected")
    assert "BLEU-1 Δ +0.0020, sign-flip over stimuli p=0.3" in lines[0] and "Bonferroni over 1 tests" in lines[0]
    assert lines[1].startswith("vs PerBrainLLM: brain effect DETECTED") and "p=0.001" in lines[1]
    assert "length/position" not in lines[1]  # detected by the loss, not the text: nothing to match
    assert "not evidence of brain information" in lines[2]
    assert "0.610" in lines[3]
    # a difference in the wrong direction is not an effect, however small its p
    summary["comparisons"]["brain_vs_permuted"]["loss_nats"] = comparison(+0.05, 0.001)
    assert verdicts(summary)[1].startswith("vs PerBrainLLM: no brain effect detected")
    # without a length/position decoder, PerBrainLLM's line leads
    del summary["comparisons"]["brain_vs_nuisance"]
    assert verdicts(summary)[0].startswith("vs PerBrainLLM: no brain effect detected")


def test_the_content_line_leads_and_a_matched_detection_says_so():
    summary = {"comparisons": {
        "brain_vs_permuted": {"loss_nats": comparison(0.0, 0.9), "bleu1_per_sample": comparison(0.02, 0.01),
                              "posterior_loss_nats": comparison(-0.04, 0.001)},
        "brain_vs_nuisance": {"bleu1_per_sample": comparison(0.001, 0.6), "semsim_minilm_cosine": comparison(0.01, 0.04),
                              "posterior_loss_nats": comparison(0.01, 0.5)}}}
    lines = verdicts(summary)
    # p 0.04 < 0.05 but not < 0.05 / 2: two tests, Bonferroni
    assert lines[0].startswith("content beyond length/position in the decoded words: not detected")
    assert "MiniLM similarity Δ +0.0100, sign-flip over stimuli p=0.04" in lines[0]
    permuted = next(v for v in lines if v.startswith("vs PerBrainLLM:"))
    assert "brain effect DETECTED" in permuted and "the length/position decoder's text does as well" in permuted
    own = next(v for v in lines if "Bayesian decoder's own distribution" in v)
    assert "brain effect DETECTED" in own and "the length/position decoder's distribution does as well" in own
    # beyond it on the text and the distribution: detected, and no "does as well"
    summary["comparisons"]["brain_vs_nuisance"] = {"bleu1_per_sample": comparison(0.02, 0.001),
                                                   "semsim_minilm_cosine": comparison(0.01, 0.04),
                                                   "posterior_loss_nats": comparison(-0.02, 0.001)}
    lines = verdicts(summary)
    assert lines[0].startswith("content beyond length/position in the decoded words: DETECTED")
    assert not any("does as well" in v for v in lines)
    own = next(v for v in lines if "Bayesian decoder's own distribution" in v)
    assert "and beyond the length/position decoder's distribution (posterior loss Δ -0.0200" in own
    # wrong direction, however small its p, is not content
    summary["comparisons"]["brain_vs_nuisance"]["bleu1_per_sample"] = comparison(-0.02, 0.001)
    assert "decoded words: not detected" in verdicts(summary)[0]


def test_verdict_for_the_decoders_own_distribution():
    summary = {"comparisons": {"brain_vs_permuted": {
        "loss_nats": comparison(0.001, 0.8), "bleu1_per_sample": comparison(0.0, 0.9),
        "posterior_loss_nats": comparison(-0.03, 0.0004)}},
        "pairwise_accuracy": {"posterior_vs_permuted": {"mean": 0.68, "p_signflip_stimuli": 0.0002}}}
    line = next(v for v in verdicts(summary) if "Bayesian decoder's own distribution" in v)
    assert "brain effect DETECTED" in line and "p=0.0004" in line and "0.680" in line
    assert "length/position decoder's distribution" not in line  # no nuisance decode: no such clause
    summary["pairwise_accuracy"]["nuisance_posterior_vs_permuted"] = {"mean": 0.66, "p_signflip_stimuli": 0.001}
    line = next(v for v in verdicts(summary) if "Bayesian decoder's own distribution" in v)
    assert "the length/position decoder's distribution alone 0.660, sign-flip p=0.001" in line
    summary["comparisons"]["brain_vs_permuted"]["posterior_loss_nats"] = comparison(-0.03, 0.2)
    line = next(v for v in verdicts(summary) if "Bayesian decoder's own distribution" in v)
    assert "no brain effect detected" in line
    # with a length/position decoder: the content line leads
    summary["comparisons"]["brain_vs_nuisance"] = {"bleu1_per_sample": comparison(0.004, 0.18),
                                                   "posterior_loss_nats": comparison(0.017, 0.41)}
    assert verdicts(summary)[0].startswith("content beyond length/position in the decoded words: not detected")
    # no posterior loss (a run decoded by plain search): no such line
    del summary["comparisons"]["brain_vs_permuted"]["posterior_loss_nats"]
    assert not any("own distribution" in v for v in verdicts(summary))


def test_decoder_identification_centres_each_texts_score():
    ids = np.array(["a", "b", "c"])
    # text 2 is likely under every frame (a strong prior); centred, each text is best under its own frames
    enc = np.array([[0.0, -1.0, -1.0], [-1.0, 0.0, -1.0], [-1.0, -1.0, 0.0]])
    scores = {"ids": ids, "stimuli": np.array(["s1", "s2", "s3"]), "frame_keys": np.array(["0", "1", "2"]),
              "n_tokens": np.array([2, 2, 2]), "weight": np.array(1.0), "encoding": enc, "nuisance": np.zeros((3, 3))}
    loss = np.array([[3.0, 3.0, 3.0], [3.0, 3.0, 3.0], [1.0, 1.0, 1.0]])  # mean CE: text 2 is cheap everywhere
    out = decoder_identification(scores, (["a", "b", "c"], loss))
    # all-tied scores identify nothing: ties count half
    assert out["encoding_model"]["across"] == 1.0 and out["length_position_model"]["across"] == 0.5
    assert out["decoder_score"]["across"] == 1.0  # the prior of text 2 does not decide after centring
    assert decoder_identification(None, None)["available"] is False
