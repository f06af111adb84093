"""Knowledge distillation: a small student learns from a big teacher's outputs (Hinton et al.)
and, optionally, from one of its feature maps through a learned 1x1 projection (FitNets-style).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..train import Objective, TrainConfig, TrainResult, train
from ._common import load_for_training, seeded, splits

__all__ = ["DistillObjective", "distill", "pick_feature_pair"]


def _feature_maps(model: nn.Module, x: torch.Tensor, max_depth: int = 2) -> list[tuple[str, tuple]]:
    """(name, output shape) of every module up to `max_depth` that returns a 4-D map, in the
    order their forward passes finish."""
    from ..models.stats import hooked_forward

    seen: list[tuple[str, tuple]] = []
    hooked_forward(model, x, {m: (lambda _m, _i, out, n=name: seen.append((n, tuple(out.shape)))
                                  if isinstance(out, torch.Tensor) and out.ndim == 4 else None)
                              for name, m in model.named_modules() if name and name.count(".") < max_depth})
    return seen


def pick_feature_pair(student: nn.Module, teacher: nn.Module, input_size) -> tuple[str, str]:
    """The teacher's last feature map, and the student's last one with the same spatial size."""
    x = torch.zeros(2, *input_size)
    t_maps, s_maps = _feature_maps(teacher, x), _feature_maps(student, x)
    if not t_maps or not s_maps:
        raise InputError("feature distillation needs 4-D feature maps in both models")
    t_name, t_shape = t_maps[-1]
    match = [n for n, s in s_maps if s[2:] == t_shape[2:]]
    if not match:
        sizes = sorted({s[2:] for _, s in s_maps})
        raise InputError(f"no student feature map is {t_shape[2]}x{t_shape[3]} like teacher {t_name}; "
                         f"student has {sizes}: name a pair with --feature STUDENT:TEACHER")
    return match[-1], t_name


class DistillObjective(Objective):
    """alpha * T^2 * KL(student/T || teacher/T) + (1 - alpha) * CE(labels)
    [+ beta * ||proj(student map) - teacher map||^2 / ||teacher map||^2].

    The teacher is kept out of the module tree (no gradients, not saved, not synced by DDP) and
    always runs in eval mode. Its logits are cached per image when augmentation is off, since
    then every epoch shows it the same inputs.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, *, temperature: float = 4.0,
                 alpha: float = 0.9, feature: tuple[str, str] | None = None,
                 feature_weight: float = 1.0, cache_size: int | None = None,
                 label_smoothing: float = 0.0, input_size=(3, 32, 32)) -> None:
        super().__init__()
        if temperature <= 0 or not 0 <= alpha <= 1:
            raise InputError("distillation needs temperature > 0 and 0 <= alpha <= 1")
        self.model = student
        self._teacher = [teacher.eval().requires_grad_(False)]
        self.temperature, self.alpha, self.feature_weight = temperature, alpha, feature_weight
        self.feature = feature
        self.label_smoothing = label_smoothing
        self._cache = None if cache_size is None else {}
        self._feats: dict[str, torch.Tensor] = {}
        if feature:
            s_name, t_name = feature
            try:
                s_mod, t_mod = student.get_submodule(s_name), teacher.get_submodule(t_name)
            except AttributeError as e:
                raise InputError(f"--feature {s_name}:{t_name}: {e}") from None
            x = torch.zeros(2, *input_size)
            s_ch = dict(_feature_maps(student, x, 99))[s_name][1]
            t_ch = dict(_feature_maps(teacher, x, 99))[t_name][1]
            self.projection = nn.Conv2d(s_ch, t_ch, 1, bias=False)
            s_mod.register_forward_hook(lambda _m, _i, out: self._feats.__setitem__("s", out))
            t_mod.register_forward_hook(lambda _m, _i, out: self._feats.__setitem__("t", out))

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    def _apply(self, fn, *args, **kwargs):  # .to(device) moves the hidden teacher too
        self._teacher[0]._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    @property
    def uses_teacher(self) -> bool:
        """alpha 0 without feature KD is plain label training: the teacher is never run."""
        return self.alpha > 0 or bool(self.feature)

    def _teacher_logits(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self._cache is not None and not self.feature:
                keys = index.tolist()
                if all(k in self._cache for k in keys):
                    return torch.stack([self._cache[k] for k in keys]).to(x.device)
                out = self.teacher(x)
                self._cache.update(zip(keys, out.cpu()))
                return out
            return self.teacher(x)

    def forward(self, x, y, index):
        logits = self.model(x)
        kd = logits.new_zeros(())
        if self.uses_teacher:
            t_logits = self._teacher_logits(x, index)
            T = self.temperature
            kd = F.kl_div(F.log_softmax(logits / T, 1), F.log_softmax(t_logits / T, 1),
                          reduction="batchmean", log_target=True) * T * T
        loss = self.alpha * kd + (1 - self.alpha) * F.cross_entropy(
            logits, y, label_smoothing=self.label_smoothing)
        if self.feature:
            s, t = self.projection(self._feats["s"]), self._feats["t"].detach()
            # relative error: scale-free, so the weight means the same for any teacher
            rel = F.mse_loss(s, t) / t.pow(2).mean().clamp_min(1e-8)
            loss = loss + self.feature_weight * rel
        return loss, logits

    def describe(self) -> dict:
        return {"objective": "distill", "temperature": self.temperature, "alpha": self.alpha,
                "feature": ":".join(self.feature) if self.feature else None,
                "feature_weight": self.feature_weight if self.feature else None,
                "teacher_cache": self._cache is not None and not self.feature}


def _load_student(module: nn.Module, path: Path, student: str, num_classes: int, trust_pickle: bool) -> None:
    """Copy a saved student's weights into the fresh `student`; refuse any that do not fit it."""
    from ..models import load_model

    saved = load_model(path, arch=student, num_classes=num_classes, trust_pickle=trust_pickle).module
    try:
        module.load_state_dict(saved.state_dict())
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))[:160]
        raise InputError(f"--student-weights {path} do not fit student {student} ({first}): pass weights "
                         "saved from that same student (arch, width and classes)") from None


def distill(teacher: str | Path, *, student: str, data: str | Path, out: str | Path,
            teacher_arch: str | None = None, trust_pickle: bool = False,
            temperature: float = 4.0, alpha: float = 0.9, feature: str | None = None,
            feature_weight: float = 1.0, config: TrainConfig | None = None,
            student_weights: str | Path | None = None,
            resume: bool = False, progress: bool = True) -> TrainResult:
    """Train zoo model `student` (e.g. `cifar_mobilenet_v2:width=0.5`) from `teacher` on `data`.

    The student takes the teacher's input size, normalization and classes, so both see the
    same images. `feature`: None, "auto", or "STUDENT_MODULE:TEACHER_MODULE".
    `student_weights`: start the student from these weights (a checkpoint or state_dict of that
    same student, e.g. one distilled earlier) instead of a fresh initialisation.
    """
    from ..models import get_model
    from ..train import evaluate_top1

    cfg = config or TrainConfig()
    t_module, t_card, ds, note = load_for_training(teacher, data=data, arch=teacher_arch,
                                                   num_classes=None, trust_pickle=trust_pickle)
    if note:
        raise InputError("the teacher has a different number of "
                         f"outputs than {data} has classes ({len(ds.classes)}); fine-tune it first")
    with seeded(cfg.seed):  # the student's initial weights: same seed, same student, whatever ran before
        s_module, s_card = get_model(student, num_classes=t_card.num_classes)
    if student_weights is not None:
        _load_student(s_module, Path(student_weights), student, t_card.num_classes, trust_pickle)
    s_card = s_card.with_(input_size=t_card.input_size, mean=t_card.mean, std=t_card.std,
                          resize=t_card.resize, class_names=t_card.class_names,
                          source=f"distilled from {teacher} on {ds.name}")
    pair = None
    if feature == "auto":
        pair = pick_feature_pair(s_module, t_module, t_card.input_size)
    elif feature:
        if ":" not in feature:
            raise InputError("--feature takes 'auto' or STUDENT_MODULE:TEACHER_MODULE")
        pair = tuple(feature.split(":", 1))
    train_split, eval_split = splits(ds, cfg)
    objective = DistillObjective(s_module, t_module, temperature=temperature, alpha=alpha,
                                 feature=pair, feature_weight=feature_weight,
                                 cache_size=None if cfg.augment else len(train_split),
                                 label_smoothing=cfg.label_smoothing, input_size=t_card.input_size)
    result = train(objective, s_card, train_split, eval_split, cfg, out, resume=resume,
                   progress=progress)
    result.extra["teacher_top1"], _ = evaluate_top1(t_module, eval_split, t_card)
    result.extra["objective"] = objective.describe()
    return result
