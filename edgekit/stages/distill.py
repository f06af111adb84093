"""Knowledge distillation: a small student learns from a big teacher's outputs (Hinton et al.,
or decoupled KD, Zhao et al. 2022) and, optionally, from one of its feature maps through a
learned 1x1 projection (FitNets-style).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..train import Objective, TrainConfig, TrainResult, train
from ._common import load_for_training, seeded, splits

__all__ = ["DistillObjective", "distill", "dkd_loss", "pick_feature_pair"]

LOSSES = ("kd", "dkd")
_ALPHA = {"kd": 0.9, "dkd": 1.0}  # each loss's usual alpha (its meaning differs, see DistillObjective)


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise InputError(f"unknown distillation loss {loss!r}: use one of {', '.join(LOSSES)}")


def dkd_loss(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, temperature: float,
             alpha: float, beta: float) -> torch.Tensor:
    """Decoupled KD: alpha * TCKD + beta * NCKD, each T^2-scaled.

    Hinton's KL splits into a target-vs-rest term (TCKD) and a KL over the non-target classes
    (NCKD) weighted by 1 - p_target(teacher); a confident teacher therefore passes on little of
    the non-target "dark knowledge". DKD weighs the two terms independently.
    """
    T = temperature
    gt = F.one_hot(y, student.shape[1]).bool()
    ps, pt = F.softmax(student / T, 1), F.softmax(teacher / T, 1)
    bs = torch.stack([ps.masked_fill(~gt, 0).sum(1), ps.masked_fill(gt, 0).sum(1)], 1)
    bt = torch.stack([pt.masked_fill(~gt, 0).sum(1), pt.masked_fill(gt, 0).sum(1)], 1)
    tckd = F.kl_div(bs.clamp_min(1e-12).log(), bt, reduction="batchmean")
    # the target class masked out: distributions over the other classes only
    ls = F.log_softmax(student / T - 1000.0 * gt, 1)
    lt = F.log_softmax(teacher / T - 1000.0 * gt, 1)
    nckd = F.kl_div(ls, lt, reduction="batchmean", log_target=True)
    return (alpha * tckd + beta * nckd) * T * T


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
    """The teacher's last feature map, and the student's last one with the same spatial size.

    A 1x1 map that follows larger ones is a global pool's output (torchvision's `avgpool`
    module), not a feature map: the teacher's last map larger than 1x1 is taken instead."""
    x = torch.zeros(2, *input_size)
    t_maps, s_maps = _feature_maps(teacher, x), _feature_maps(student, x)
    if not t_maps or not s_maps:
        raise InputError("feature distillation needs 4-D feature maps in both models")
    spatial = [(n, s) for n, s in t_maps if s[2] * s[3] > 1]
    t_name, t_shape = (spatial or t_maps)[-1]
    match = [n for n, s in s_maps if s[2:] == t_shape[2:]]
    if not match:
        sizes = sorted({s[2:] for _, s in s_maps})
        raise InputError(f"no student feature map is {t_shape[2]}x{t_shape[3]} like teacher {t_name}; "
                         f"student has {sizes}: name a pair with --feature STUDENT:TEACHER")
    return match[-1], t_name


class DistillObjective(Objective):
    """loss "kd": alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * CE(labels);
    loss "dkd": CE(labels) + ramp * (alpha * TCKD + beta * NCKD) (see dkd_loss), the paper's
    form, where ramp grows linearly to 1 over `warmup_epochs` so the large NCKD weight does not
    swamp a random student; [+ feature_weight * ||proj(student map) - teacher map||^2 / ||teacher map||^2].

    The teacher is kept out of the module tree (no gradients, not saved, not synced by DDP) and
    always runs in eval mode, in bfloat16 autocast if `teacher_bf16` (1.7x faster for a
    ResNet-56 on an AVX512-BF16 CPU; soft targets change by a KL of 3e-5 at T=4 on a CIFAR ResNet-56). Its
    logits are cached per image when augmentation is off, since then every epoch shows it the
    same inputs.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, *, temperature: float = 4.0,
                 alpha: float | None = None, loss: str = "kd", beta: float = 8.0,
                 warmup_epochs: float = 0.0, teacher_bf16: bool = False,
                 feature: tuple[str, str] | None = None,
                 feature_weight: float = 1.0, cache_size: int | None = None,
                 label_smoothing: float = 0.0, input_size=(3, 32, 32)) -> None:
        super().__init__()
        _check_loss(loss)
        alpha = _ALPHA[loss] if alpha is None else alpha
        if (temperature <= 0 or alpha < 0 or (loss == "kd" and alpha > 1) or beta < 0 or warmup_epochs < 0
                or feature_weight < 0):
            raise InputError("distillation needs temperature > 0, 0 <= alpha (<= 1 for kd), beta >= 0, "
                             "warm-up epochs >= 0 and feature weight >= 0")
        self.model = student
        self._teacher = [teacher.eval().requires_grad_(False)]
        self.temperature, self.alpha, self.feature_weight = temperature, alpha, feature_weight
        self.loss, self.beta, self.warmup_epochs = loss, beta, warmup_epochs
        self.teacher_bf16 = teacher_bf16
        self.epoch = 0
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
        """No distillation weight and no feature KD is plain label training: the teacher never runs."""
        return self.alpha > 0 or (self.loss == "dkd" and self.beta > 0) or bool(self.feature)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def teacher_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits as distillation computes them (float32, or bf16 autocast if
        `teacher_bf16`); the caller holds no_grad. Public so benchmarks time the same call."""
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.teacher_bf16):
            return self.teacher(x).float()

    def _teacher_logits(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self._cache is not None and not self.feature:
                keys = index.tolist()
                if all(k in self._cache for k in keys):
                    return torch.stack([self._cache[k] for k in keys]).to(x.device)
                out = self.teacher_forward(x)
                self._cache.update(zip(keys, out.cpu()))
                return out
            return self.teacher_forward(x)

    def forward(self, x, y, index):
        logits = self.model(x).float()  # losses in float32 under bf16 autocast
        ce = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        T = self.temperature
        if self.loss == "dkd":
            loss = ce
            if self.uses_teacher:
                ramp = min((self.epoch + 1) / self.warmup_epochs, 1.0) if self.warmup_epochs else 1.0
                loss = loss + ramp * dkd_loss(logits, self._teacher_logits(x, index), y, T,
                                              self.alpha, self.beta)
        else:
            kd = logits.new_zeros(())
            if self.uses_teacher:
                kd = F.kl_div(F.log_softmax(logits / T, 1), F.log_softmax(self._teacher_logits(x, index) / T, 1),
                              reduction="batchmean", log_target=True) * T * T
            loss = self.alpha * kd + (1 - self.alpha) * ce
        if self.feature:
            s, t = self.projection(self._feats["s"]).float(), self._feats["t"].detach().float()
            # relative error: scale-free, so the weight means the same for any teacher
            rel = F.mse_loss(s, t) / t.pow(2).mean().clamp_min(1e-8)
            loss = loss + self.feature_weight * rel
        return loss, logits

    def describe(self) -> dict:
        extra = {"loss": "dkd", "beta": self.beta, "warmup_epochs": self.warmup_epochs} if self.loss == "dkd" else {}
        if self.teacher_bf16:
            extra["teacher_precision"] = "bf16"
        return {"objective": "distill", "temperature": self.temperature, "alpha": self.alpha, **extra,
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
            temperature: float = 4.0, alpha: float | None = None, loss: str = "kd",
            beta: float = 8.0, kd_warmup_epochs: float = 0.0, teacher_bf16: bool = False,
            feature: str | None = None,
            feature_weight: float = 1.0, config: TrainConfig | None = None,
            student_weights: str | Path | None = None,
            resume: bool = False, progress: bool = True) -> TrainResult:
    """Train zoo model `student` (e.g. `cifar_mobilenet_v2:width=0.5`) from `teacher` on `data`.

    The student takes the teacher's input size, normalization and classes, so both see the
    same images. `loss`/`alpha`/`beta`/`kd_warmup_epochs`/`teacher_bf16`: see DistillObjective
    (alpha defaults to 0.9 for "kd", 1.0 for "dkd"). `feature`: None, "auto", or
    "STUDENT_MODULE:TEACHER_MODULE".
    `student_weights`: start the student from these weights (a checkpoint or state_dict of that
    same student, e.g. one distilled earlier) instead of a fresh initialisation.
    """
    from ..models import get_model
    from ..train import evaluate_top1

    _check_loss(loss)  # before the data loads
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
                                 loss=loss, beta=beta, warmup_epochs=kd_warmup_epochs,
                                 teacher_bf16=teacher_bf16, feature=pair, feature_weight=feature_weight,
                                 cache_size=None if cfg.augment else len(train_split),
                                 label_smoothing=cfg.label_smoothing, input_size=t_card.input_size)
    result = train(objective, s_card, train_split, eval_split, cfg, out, resume=resume,
                   progress=progress)
    result.extra["teacher_top1"], _ = evaluate_top1(t_module, eval_split, t_card)
    result.extra["objective"] = objective.describe()
    return result
