"""Open the model of a run and resolve the run's facts once: :class:`RunFacts`.

Model, backend, device, dtype, causal mask, layers, N grid and head size are decided
here, where the model is opened, and passed down; nothing below re-derives them
(docs/architecture.md, "One place per fact").
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tl_geom.errors import TlGeomError
from tl_geom.geometry.baseline import default_score_dtype
from tl_geom.jobs.config import check_model_options
from tl_geom.lens.hooks import (
    ModelDims,
    is_causal,
    model_device,
    model_dims,
    model_name,
    normalize_layers,
)
from tl_geom.lens.rows import Backend, backend_of
from tl_geom.lens.sdpa import as_fused, fused_supported, load_fused_model
from tl_geom.lens.value_bias import check_value_biases

__all__ = ["RunFacts", "check_device", "model_identity", "open_model", "open_run"]


@dataclass(frozen=True)
class RunFacts:
    """What a run is, resolved once where its model is opened.

    Attributes:
        model: the model's name (the name given, else ``cfg.model_name``).
        backend: ``"hooks"`` or ``"sdpa"``: how the attention rows are read.
        device: where the model's weights are.
        dtype: the model's parameter dtype.
        causal: whether query rows see only their past (decoders).
        layers: the layers analysed, sorted.
        n_grid: the N values, sorted.
        dims: the model's attention shapes (``d_head``, heads, KV heads, context).
        path: the directory the model was loaded from (None for a model object).
        baseline_scores: dtype of the random baseline's scores ``g``, ``"float64"`` or
            ``"float32"`` (certified, the same counts: ``baseline.random_counts``);
            ``auto`` resolves to float32 on an accelerator and float64 on the CPU
            (:func:`~tl_geom.geometry.baseline.default_score_dtype`).
    """

    model: str
    backend: Backend
    device: str
    dtype: str
    causal: bool
    layers: tuple[int, ...]
    n_grid: tuple[int, ...]
    dims: ModelDims
    path: Path | None = None
    baseline_scores: str = "float64"

    def to_dict(self) -> dict[str, Any]:
        """The facts for ``run.json`` (``dims`` as its own mapping)."""
        return {
            "model": self.model,
            "backend": self.backend,
            "device": self.device,
            "dtype": self.dtype,
            "causal": self.causal,
            "layers": list(self.layers),
            "n": list(self.n_grid),
            "baseline_scores": self.baseline_scores,
        }


def check_device(device: str | None) -> str | None:
    """``device`` checked before anything loads; under torchrun, ``cuda`` is the local GPU.

    Raises:
        TlGeomError: an unknown device string, ``meta`` (no data to run), or CUDA asked
            for where torch sees none.
    """
    if device is None:
        return None
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise TlGeomError(f"device={device!r} is not a torch device (cpu, cuda, cuda:1)") from None
    if kind == "meta":
        raise TlGeomError(
            f"device={device!r} holds no data (shapes only); use cpu or cuda to run a model"
        )
    if kind == "cuda" and not torch.cuda.is_available():
        raise TlGeomError(f"device={device!r} asked for, but torch sees no CUDA GPU here")
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"  # one GPU per torchrun process
    return device


def open_model(
    model: Any, backend: str = "hooks", *, device: str | None = None, dtype: str = "float32"
) -> Any:
    """The model to run for ``backend``: loaded by name, or the given object checked.

    ``hooks``: a TransformerLens model (``load_model``); ``sdpa``: a
    :class:`~tl_geom.lens.sdpa.FusedModel` (``load_fused_model``; fused attention, only the
    needed rows recomputed); ``auto``: ``sdpa`` where the architecture routes attention
    through transformers' AttentionInterface, else ``hooks``. A model object is used as
    given under ``auto``. ``model`` may also be a directory already resolved
    (:func:`open_run` passes one).

    Raises:
        TlGeomError: an unknown backend or dtype, ``device="cuda"`` without a GPU,
            ``sdpa`` for a model it cannot serve (the message names ``--backend hooks``).
    """
    check_model_options(backend, dtype)
    device = check_device(device)
    if not isinstance(model, str | Path):
        return as_fused(model) if backend == "sdpa" else model
    from tl_geom.lens.models import load_model, loading_errors, resolve_model

    path = resolve_model(model)
    torch_dtype = getattr(torch, dtype)
    with loading_errors(path):
        if backend == "sdpa" or (backend == "auto" and fused_supported(path)):
            return load_fused_model(path, device=device, dtype=torch_dtype)
        return load_model(path, device=device, dtype=torch_dtype)


def model_identity(model: Any, facts: RunFacts) -> dict[str, Any]:
    """The model as a window's fingerprint knows it (the same for both backends).

    Loaded by name (``facts.path`` set): the resolved directory and, per weight file
    (``*.safetensors``, ``*.bin``, ``*.pt``, ``*.gguf``), its size and modification
    time, so a re-converted or edited checkpoint differs [ours: cheaper than hashing
    the bytes]. A model object: ``weights``, blake2b over every parameter's shape, dtype
    and bytes in the model's order (a fine-tuned copy differs whatever its name), and
    ``hooks``, the non-permanent TransformerLens hooks present when the run starts, by
    hook point (``ablate_heads`` and friends: an ablated model differs from the clean
    one) [ours: a hook's function cannot be hashed, its presence is recorded].
    """
    name = facts.model
    if facts.path is not None:
        path = facts.path.resolve()
        files = {
            f.name: [f.stat().st_size, f.stat().st_mtime_ns]
            for f in sorted(path.iterdir())
            if f.suffix in (".safetensors", ".bin", ".pt", ".gguf")
        }
        return {"name": name, "path": str(path), "files": files}
    digest = hashlib.blake2b(digest_size=32)
    for param in model.parameters():
        data = param.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{tuple(param.shape)}{param.dtype}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    hooks: dict[str, int] = {}
    modules = getattr(model, "named_modules", None)
    for mod_name, module in modules() if modules is not None else []:
        for attr in ("fwd_hooks", "bwd_hooks"):
            live = [h for h in getattr(module, attr, None) or [] if not h.is_permanent]
            if live:
                hooks[f"{mod_name}.{attr}"] = len(live)
    return {"name": name, "weights": digest.hexdigest(), "hooks": hooks}


def open_run(
    model: Any,
    *,
    backend: str,
    device: str | None,
    dtype: str,
    layers: tuple[int, ...] | None,
    n_grid: tuple[int, ...],
    ctx: int,
    needs_tokenizer: bool = True,
    baseline_scores: str = "auto",
) -> tuple[Any, RunFacts]:
    """Open ``model`` (:func:`open_model`) and resolve the run's facts against it.

    Raises:
        TlGeomError: as :func:`open_model`; ``ctx`` beyond the model's context; a model
            without a tokenizer when ``needs_tokenizer`` (windows are cut with it); a
            model object whose value biases were folded into ``b_O``
            (:func:`~tl_geom.lens.value_bias.check_value_biases`).
    """
    device = check_device(device)  # before the name is resolved (a conversion may run)
    path = None
    if isinstance(model, str):
        from tl_geom.lens.models import resolve_model

        name, path = model, resolve_model(model)  # the one resolution of the name
    else:
        name = model_name(model)
        check_value_biases(model)
    model = open_model(path if path is not None else model, backend, device=device, dtype=dtype)
    dims = model_dims(model)
    if dims.n_ctx and ctx > dims.n_ctx:
        raise TlGeomError(f"ctx={ctx} exceeds the model's context n_ctx={dims.n_ctx}")
    if needs_tokenizer and getattr(model, "tokenizer", None) is None:
        raise TlGeomError("the model has no tokenizer; analyze needs one to cut windows")
    param = next(iter(model.parameters()))
    where = model_device(model)
    if baseline_scores == "auto":
        baseline_scores = str(default_score_dtype(where, torch.float64)).removeprefix("torch.")
    facts = RunFacts(
        model=name,
        backend=backend_of(model),
        device=str(where),
        dtype=str(param.dtype).removeprefix("torch."),
        causal=is_causal(model),
        layers=normalize_layers(list(layers) if layers else None, dims.n_layers),
        n_grid=n_grid,
        dims=dims,
        path=path,
        baseline_scores=baseline_scores,
    )
    return model, facts
