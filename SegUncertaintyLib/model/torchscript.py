"""Third-party TorchScript networks as backbones, with their intermediate features.

A scripted network runs as one compiled graph, so forward hooks cannot see its submodules. To tap
a submodule's output, :class:`ScriptGraph` walks the top-level ``forward`` graph in Python: each
submodule call is made on the scripted submodule itself (compiled code, same numbers), each tensor
operation through ``torch.ops.aten`` with its schema's arguments, and the outputs of the named
submodules are kept. The result equals the scripted forward exactly (tested); only graphs without
control flow at the top level can be walked, which is what tracing produces.

TorchScript files are code: they are loaded only from a path the user chose or from an installed
package the model card names, and always checked against the card's SHA-256 first.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError

# node kinds the walker executes; anything else (prim::If, prim::Loop, ...) means control flow
_WALKABLE = ("prim::Constant", "prim::GetAttr", "prim::CallMethod", "prim::ListConstruct", "prim::TupleConstruct")


class ScriptGraph:
    """The top-level ``forward`` of a scripted network, run node by node so named submodule outputs can be kept.

    Args:
        network: a ``torch.jit.ScriptModule`` whose forward takes one tensor.

    Raises:
        ModelError: the forward has control flow or takes other inputs (it cannot be walked).
    """

    def __init__(self, network: torch.jit.ScriptModule):
        self.network = network
        self.graph = network.graph
        inputs = list(self.graph.inputs())
        if len(inputs) != 2:
            raise ModelError(f"the TorchScript network's forward takes {len(inputs) - 1} inputs; one image is needed")
        self._self_name, self._input_name = inputs[0].debugName(), inputs[1].debugName()
        for node in self.graph.nodes():
            kind = node.kind()
            if kind not in _WALKABLE and not kind.startswith("aten::"):
                raise ModelError(
                    f"the TorchScript network's forward uses {kind} at its top level; features can only be read "
                    "from networks whose top-level forward is a plain sequence of calls (as tracing produces)"
                )

    @property
    def submodules(self) -> list[str]:
        """Names of the submodules the top-level forward calls (the features that can be tapped)."""
        return [name for name, _ in self.network.named_children()]

    def run(self, image: torch.Tensor, taps: Sequence[str] = ()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The network's output for ``image`` and the outputs of the submodules named in ``taps``.

        Raises:
            ModelError: a tap is not a submodule the forward calls.
        """
        unknown = [t for t in taps if t not in self.submodules]
        if unknown:
            raise ModelError(
                f"feature tap(s) {', '.join(unknown)} not found in the TorchScript network "
                f"(its top-level submodules: {', '.join(self.submodules)})"
            )
        values: dict[str, Any] = {self._self_name: self.network, self._input_name: image}
        attribute_of: dict[str, str] = {}
        features = {}
        for node in self.graph.nodes():
            kind = node.kind()
            inputs = [values[v.debugName()] for v in node.inputs()]
            if kind == "prim::Constant":
                value = node.output().toIValue()
            elif kind == "prim::GetAttr":
                value = getattr(inputs[0], node.s("name"))
                if inputs[0] is self.network:
                    attribute_of[node.output().debugName()] = node.s("name")
            elif kind == "prim::CallMethod":
                value = getattr(inputs[0], node.s("name"))(*inputs[1:])
                owner = attribute_of.get(next(node.inputs()).debugName())
                if owner in taps:
                    features[owner] = value
            elif kind == "prim::ListConstruct":
                value = list(inputs)
            elif kind == "prim::TupleConstruct":
                value = tuple(inputs)
            else:
                value = self._aten(node, inputs)
            outputs = list(node.outputs())
            if len(outputs) == 1:
                values[outputs[0].debugName()] = value
        result = values[next(self.graph.return_node().inputs()).debugName()]
        return result, features

    def _aten(self, node: Any, inputs: list[Any]) -> Any:
        schema = torch._C.parse_schema(node.schema())
        name = schema.name.split("::", 1)[1]
        packet = getattr(torch.ops.aten, name)
        operator = getattr(packet, schema.overload_name or "default")
        args, kwargs = [], {}
        for argument, value in zip(schema.arguments, inputs, strict=False):
            if argument.kwarg_only:
                kwargs[argument.name] = value
            else:
                args.append(value)
        return operator(*args, **kwargs)


class TorchScriptBackbone(nn.Module):
    """A scripted network as a backbone: logits out, tapped features visible to :class:`FeatureTaps`.

    Args:
        network: the scripted network, ``(B, C_in, D, H, W)`` -> ``(B, C, D, H, W)``.
        output: ``"logits"``, or ``"probabilities"`` when the network ends in a softmax (its log is
            returned, which gives back the same probabilities through the engine's softmax).

    Each submodule named in ``tap_modules`` gets an identity module that its output passes through,
    so the engine's forward hooks see it.
    """

    def __init__(self, network: torch.jit.ScriptModule, output: str = "logits"):
        super().__init__()
        if output not in ("logits", "probabilities"):
            raise ModelError(f"TorchScript output must be 'logits' or 'probabilities', got {output!r}")
        self.network = network
        self.output = output
        self.graph = ScriptGraph(network)
        self.tap_modules = nn.ModuleDict({name: nn.Identity() for name in self.graph.submodules})

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        watched = [name for name, module in self.tap_modules.items() if module._forward_hooks]
        if watched:
            result, features = self.graph.run(image, watched)
            for name, feature in features.items():
                self.tap_modules[name](feature)
        else:
            result = self.network(image)
        if self.output == "probabilities":
            return torch.log(result.clamp_min(1e-7))
        return result


def installed_file(distribution: str, path: str) -> Path:
    """A file an installed Python distribution ships (found through its file list, never imported).

    Raises:
        ModelError: the distribution is not installed or does not ship the file.
    """
    try:
        installed = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(f"this model needs the {distribution!r} package: pip install {distribution}") from None
    for entry in installed.files or []:
        if entry.as_posix() == path:
            return Path(installed.locate_file(entry)).resolve()
    raise ModelError(f"the installed {distribution!r} package has no {path}")


def load_script(path: Path) -> torch.jit.ScriptModule:
    """Load a TorchScript file on the CPU (the caller has checked it against the card)."""
    try:
        network = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"cannot load TorchScript file {path}: {str(exc).strip().splitlines()[0]}") from None
    return network.eval()
