"""The trainable tail of a backbone: the part the adversaries perturb, run on cached trunk features.

The trunk (everything before the tail) runs once per window with the reference weights; a forward
pre-hook keeps the tail's inputs. The tail is a copy of the backbone's last modules, so the
backbone itself is never changed. Its instance norms are frozen at the statistics of the
reference pass on the whole window (:class:`FrozenInstanceNorm`): the tail then computes
exactly what the network computes, its output at a voxel depends only on nearby inputs, and it can
run on a small crop of a window.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ModelError


@dataclass(frozen=True)
class TailSpec:
    """Which modules form the tail, in call order, and how far (full-resolution voxels) its output sees.

    No modules: the tail is a new ``channels`` x ``channels`` 1x1x1 convolution on the network's
    logits, made the identity (``"logits"``).
    """

    modules: tuple[str, ...]
    reach: int
    channels: int = 0
    part: str = ""  # the trainable part it is (:data:`.config.TRAINABLE`, ``auto`` resolved)

    @property
    def uniform(self) -> bool:
        """True when the tail sees one voxel (1x1x1 layers only): its change is the same rule everywhere."""
        return self.reach == 0


def tail_spec(network: nn.Module, architecture: str, trainable: str, classes: int | None = None) -> TailSpec:
    """The tail for ``trainable`` (see :data:`.config.TRAINABLE`).

    * ``"last-block"``: the last decoder stage (up-convolution, two 3x3x3 convolutions) and the output layer;
    * ``"last-conv"``: the last 3x3x3 convolution with its norm, and the output layer;
    * ``"head"``: the 1x1x1 output layer alone;
    * ``"logits"``: an affine map of the ``classes`` output logits, for any network (TorchScript included);
    * ``"auto"``: ``"last-conv"`` where the architecture is known, else ``"logits"``.

    MONAI's DynUNet has the first three; nnU-Net's U-Nets (``decoder.stages`` / ``decoder.seg_layers``)
    ``last-conv`` and ``head`` (their last stage joins the skip connection inside the decoder's forward).
    """
    known = architecture == "DynUNet" or (
        architecture == "nnUNet" and hasattr(network, "decoder") and hasattr(network.decoder, "seg_layers")
    )
    if trainable == "auto":
        trainable = "last-conv" if known else "logits"
    if trainable == "logits":
        if not classes:
            raise ModelError("the logits tail needs the number of classes")
        return TailSpec((), reach=0, channels=classes, part="logits")
    if architecture == "DynUNet":
        last = f"upsamples.{len(network.upsamples) - 1}"
        if trainable == "head":
            return TailSpec(("output_block",), reach=0, part="head")
        if trainable == "last-conv":
            block = f"{last}.conv_block"
            return TailSpec((f"{block}.conv2", f"{block}.norm2", f"{block}.lrelu", "output_block"), 1, part="last-conv")
        # two 3x3x3 convolutions (1 voxel each) after a 2x up-convolution (1 voxel of alignment)
        return TailSpec((last, "output_block"), reach=3, part="last-block")
    if architecture == "nnUNet" and hasattr(network, "decoder") and hasattr(network.decoder, "seg_layers"):
        last = len(network.decoder.stages) - 1
        output = f"decoder.seg_layers.{last}"
        if trainable == "head":
            return TailSpec((output,), reach=0, part="head")
        if trainable == "last-conv":
            conv = f"decoder.stages.{last}.convs.{len(network.decoder.stages[last].convs) - 1}"
            return TailSpec((conv, output), reach=1, part="last-conv")
        raise ModelError("the fragility search on nnU-Net networks perturbs last-conv or head, not last-block")
    raise ModelError(f"the fragility search does not know the tail of a {architecture} backbone yet")


class FrozenInstanceNorm(nn.Module):
    """Instance norm whose per-sample statistics are recorded once and then held fixed.

    ``recording = True``: normalise with the input's own statistics (exactly ``InstanceNorm3d``) and
    keep them, ``(N, C)``. Otherwise: normalise with the kept ones, whatever the input's extent.
    """

    def __init__(self, norm: nn.InstanceNorm3d):
        super().__init__()
        if norm.affine:
            self.weight = nn.Parameter(norm.weight.detach().clone())
            self.bias = nn.Parameter(norm.bias.detach().clone())
        else:
            self.weight = self.bias = None
        self.eps = norm.eps
        self.recording = False
        self.register_buffer("mean", torch.zeros(0), persistent=False)
        self.register_buffer("var", torch.zeros(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.recording:
            dims = tuple(range(2, x.dim()))
            self.var, self.mean = (t.detach() for t in torch.var_mean(x, dim=dims, unbiased=False))
        spatial = (1,) * (x.dim() - 2)
        out = (x - self.mean.reshape(*self.mean.shape, *spatial)) * torch.rsqrt(
            self.var.reshape(*self.var.shape, *spatial) + self.eps
        )
        if self.weight is not None:
            out = out * self.weight.reshape(1, -1, *spatial) + self.bias.reshape(1, -1, *spatial)
        return out


class Tail(nn.Module):
    """A copy of the backbone's tail modules, called in sequence, with frozen instance norms."""

    def __init__(self, network: nn.Module, spec: TailSpec):
        super().__init__()
        if not spec.modules:
            identity = nn.Conv3d(spec.channels, spec.channels, 1)
            with torch.no_grad():
                identity.weight.copy_(torch.eye(spec.channels).reshape(spec.channels, spec.channels, 1, 1, 1))
                identity.bias.zero_()
            self.stages = nn.Sequential(identity).to(next(network.parameters()).device)
            self.requires_grad_(False).eval()
            return
        modules = dict(network.named_modules())
        missing = [name for name in spec.modules if name not in modules]
        if missing:
            raise ModelError(f"tail module(s) {', '.join(missing)} not found in the backbone")
        holder = nn.Module()  # so that a stage that is itself a norm gets replaced too
        holder.stages = nn.Sequential(*(copy.deepcopy(modules[name]) for name in spec.modules))
        _freeze_norms(holder)
        self.stages = holder.stages
        self.requires_grad_(False).eval()

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.stages[0](*inputs)
        for stage in self.stages[1:]:
            out = stage(out)
        return out

    def record(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Run on whole windows and keep their normalisation statistics (one row per window)."""
        norms = [m for m in self.modules() if isinstance(m, FrozenInstanceNorm)]
        single = inputs[0].shape[0] == 1 and inputs[0].device.type == "cpu"
        for norm in norms:
            norm.recording = True
        try:
            with torch.no_grad():
                out = self(*(batch_of_two(x) for x in inputs) if single else inputs)
        finally:
            for norm in norms:
                norm.recording = False
        if single:  # keep the first copy's statistics (see batch_of_two)
            for norm in norms:
                norm.mean, norm.var = norm.mean[:1], norm.var[:1]
            out = out[:1]
        return out


def _freeze_norms(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)):
            if child.track_running_stats:
                raise ModelError("instance norms with running statistics are not supported in the tail")
            setattr(module, name, FrozenInstanceNorm(child))
        elif isinstance(child, (nn.GroupNorm, nn.LayerNorm)):
            raise ModelError(f"{type(child).__name__} in the tail cannot be frozen yet")
        else:
            _freeze_norms(child)


def trunk_pass(network: nn.Module, spec: TailSpec, windows: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The backbone on ``(B, C_in, *patch)`` windows: its ``(B, C, *patch)`` logits and the tail's inputs."""
    single = windows.shape[0] == 1 and windows.device.type == "cpu"
    if single:  # see batch_of_two
        windows = batch_of_two(windows)
    captured: list[torch.Tensor] = []
    if not spec.modules:  # the logits tail: its input is the network's output
        with torch.no_grad():
            logits = network(windows)
        captured = [logits]
    else:
        first = dict(network.named_modules())[spec.modules[0]]

        def keep(_module: nn.Module, args: tuple) -> None:
            captured[:] = [a.detach() for a in args]

        handle = first.register_forward_pre_hook(keep)
        try:
            with torch.no_grad():
                logits = network(windows)
        finally:
            handle.remove()
    if single:
        return logits[:1], [c[:1] for c in captured]
    return logits, captured


def batch_of_two(windows: torch.Tensor) -> torch.Tensor:
    """A batch of one window, doubled.

    PyTorch's CPU convolution takes its slow im2col path for a batch of one whose
    ``N * C * D * H`` is at most 20480 (a heuristic made for 2D images), which is the case for most
    layers of a 48^3 window: there, one window costs 0.18 s and two cost 0.08 s (the bundled
    backbone, 2 threads). The second copy changes nothing for the first (per-sample norms).
    """
    return torch.cat([windows, windows])


def crop_inputs(inputs: Sequence[torch.Tensor], box: Sequence[slice], window: Sequence[int]) -> list[torch.Tensor]:
    """The tail's inputs over a box of the window (full-resolution voxels; box ends aligned to every input's scale)."""
    out = []
    for tensor in inputs:
        factors = [w // s for w, s in zip(window, tensor.shape[2:], strict=True)]
        index = tuple(slice(b.start // f, b.stop // f) for b, f in zip(box, factors, strict=True))
        out.append(tensor[(slice(None), slice(None), *index)])
    return out


def input_scale(inputs: Sequence[torch.Tensor], window: Sequence[int]) -> list[int]:
    """Per axis, the largest down-sampling factor among the tail's inputs (crop boxes align to it)."""
    return [max(w // t.shape[2 + a] for t in inputs) for a, w in enumerate(window)]


def stacked_parameters(tail: Tail, copies: int) -> dict[str, torch.Tensor]:
    """The tail's parameters repeated ``copies`` times along a new first axis, trainable."""
    return {
        name: p.detach().unsqueeze(0).repeat(copies, *([1] * p.dim())).requires_grad_(True)
        for name, p in tail.named_parameters()
    }


def batched_tail(tail: Tail, parameters: dict[str, torch.Tensor], inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Every copy of the tail on the same inputs in one call: ``(M, N, C, ...)``."""
    from torch.func import functional_call, vmap

    def one(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(tail, params, tuple(inputs))

    return vmap(one)(parameters)
