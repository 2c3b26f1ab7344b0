"""The accuracy figures of calibrated W8A8 and the gate on them (``convert.calibration.thresholds``):
per-layer relative L2 from the calibration run, and the agreement of final logits with the float
model's (KL, top-1, relative error), which ``verify`` also applies to a converted output."""

from __future__ import annotations

import torch

from ascend.errors import CheckFailed


def logits_agreement(ref: torch.Tensor, got: torch.Tensor) -> dict:
    """Mean KL(ref ‖ got), top-1 agreement and relative L2 error of [N, vocab] logits: the figures
    the accuracy gate bounds (``verify`` applies them to a converted output)."""
    return agreement_from_sums(agreement_sums(ref.float(), got.float()), ref.shape[0])


def agreement_sums(f: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    logp_f, logp_q = torch.log_softmax(f, -1), torch.log_softmax(q, -1)
    return torch.tensor([float((logp_f.exp() * (logp_f - logp_q)).sum()), int((f.argmax(-1) == q.argmax(-1)).sum()),
                         float((q - f).pow(2).sum()), float(f.pow(2).sum())], dtype=torch.float64)


def agreement_from_sums(sums: torch.Tensor, n: int) -> dict:
    kl, same, err2, ref2 = sums.tolist()
    return {"kl": max(kl, 0.0) / n, "top1": same / n, "rel_err": (err2 / max(ref2, 1e-30)) ** 0.5, "tokens": n}


def check_gate(info: dict, th) -> None:
    """Exit 3 (``CheckFailed``) naming every broken threshold and the worst layers."""
    rels = {int(n): v["rel_l2"] for n, v in info["layers"].items()}
    worst = sorted(rels, key=lambda n: -rels[n])[:3]
    broken = []
    if th.layer_rel_l2 is not None:
        over = [n for n in worst if rels[n] > th.layer_rel_l2]
        if over:
            broken.append(f"layer rel-L2 above {th.layer_rel_l2}: " + ", ".join(f"layer {n} {rels[n]:.3g}" for n in over))
    broken += logits_problems(info["logits"], th)
    if broken:
        names = ", ".join(f"{n} ({rels[n]:.3g})" for n in worst)
        raise CheckFailed("calibrated W8A8 accuracy gate failed: " + "; ".join(broken),
                          why=f"worst layers by rel-L2: {names}",
                          fix="enable or retune smoothing (convert.calibration.smoothing_alpha), use more calibration data, or relax convert.calibration.thresholds")


def logits_problems(lg: dict, th) -> list[str]:
    """The logits thresholds of ``th`` (CalibrationThresholds) that ``lg`` (``logits_agreement``) breaks."""
    broken = []
    if th.logits_kl is not None and lg["kl"] > th.logits_kl:
        broken.append(f"logits KL {lg['kl']:.3g} > {th.logits_kl}")
    if th.top1 is not None and lg["top1"] < th.top1:
        broken.append(f"top-1 agreement {lg['top1']:.3g} < {th.top1}")
    if th.logits_rel_err is not None and lg["rel_err"] > th.logits_rel_err:
        broken.append(f"logits rel. error {lg['rel_err']:.3g} > {th.logits_rel_err}")
    return broken
