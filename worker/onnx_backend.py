"""The ONNX Runtime backend: a sentence-transformers model exported to ONNX
and run by onnxruntime on the CPU.

A model name with a backend prefix selects it, anywhere a model name goes
(``create_vectorizer(..., model => ...)``, ``set_model``, the CLI):

  * ``onnx:<model>`` — the model's transformer exported to ONNX (fp32);
  * ``onnx-int8:<model>`` — the same, its weights quantized to int8
    (dynamic quantization: activations are quantized at run time).

Their vectors differ from the torch backend's (int8 by a cosine of ~0.99),
so each is a model version of its own: the tag names the prefixed model, the
precision, and a digest of the ONNX graph's weights.

The export runs once per model, backend and recipe, into
``AUTOEMBED_ONNX_CACHE`` (default ``~/.cache/autoembed/onnx``): each worker
process that finds no export makes one in a private temporary folder and
renames it into place, so processes exporting at once never see a partial
file. The tokenizer, the chunking and the batching by token count are the
torch embedder's; pooling and normalization are the model's own modules.

Needs ``pip install 'autoembed[onnx]'`` (onnxruntime and onnx).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from autoembed.worker.embedders import ModelLoadError, SentenceTransformerEmbedder
from autoembed.worker.versions import digest_tensors

# Model-name prefix -> the precision its weights run at.
BACKENDS = {"onnx": "fp32", "onnx-int8": "int8"}
# Bump when the export changes what a cached model holds.
RECIPE = 1
INSTALL_HINT = "pip install 'autoembed[onnx]'"
# What the exported graph takes (no attention mask: nothing is padded).
_INPUTS = ("input_ids", "token_type_ids")
BATCH = 32  # fp32: texts of one length per run


def split_backend(name: str) -> tuple[str | None, str]:
    """The backend prefix of a model name and the model it names:
    ``("onnx-int8", "sentence-transformers/all-MiniLM-L6-v2")``, or
    ``(None, name)`` for a model the torch backend runs."""
    prefix, sep, model = name.partition(":")
    if sep and prefix in BACKENDS:
        return prefix, model
    return None, name


def cache_root() -> Path:
    """Where exported models are kept (AUTOEMBED_ONNX_CACHE, else
    $XDG_CACHE_HOME/autoembed/onnx, else ~/.cache/autoembed/onnx)."""
    explicit = os.environ.get("AUTOEMBED_ONNX_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "autoembed" / "onnx"


def _require_runtime(name: str) -> Any:
    try:
        import onnx  # noqa: F401  (the export and the digest read ONNX files)
        import onnxruntime
    except ImportError as e:
        raise ModelLoadError(
            f"model {name!r} runs on ONNX Runtime, but {e.name or 'onnxruntime'} is not "
            f"installed: {INSTALL_HINT}"
        ) from e
    return onnxruntime


class OnnxEmbedder(SentenceTransformerEmbedder):
    """A sentence-transformers model whose transformer runs on ONNX Runtime
    (CPU). Loading reads the torch model once (tokenizer, pooling, the digest
    that keys the export), then frees its transformer weights.

    Texts are tokenized once and run in parallel on ``threads`` threads
    (limit_cpu_threads; default: the CPUs this process may use), each run on
    one core: on a CPU shared with PostgreSQL and other workers, runs side by
    side lose less to a busy core than one run split across cores. int8 runs
    each text alone: dynamic quantization scales a run's activations by
    their range, so a vector would otherwise depend on its batch. fp32 runs
    texts of one token count together (nothing is padded: the graph takes no
    attention mask)."""

    def __init__(self, name: str) -> None:
        backend, model = split_backend(name)
        if (
            backend is None
            or not model
            or split_backend(model)[0]
            or model.startswith(("hash:", "null:"))
        ):
            raise ModelLoadError(
                f"{name!r} is not an ONNX model name: "
                f"{' or '.join(f'{p}:<model>' for p in BACKENDS)}, the model a "
                "sentence-transformers model"
            )
        ort = _require_runtime(name)
        super().__init__(model, "cpu")
        self.name = name
        self.dtype = BACKENDS[backend]
        self.batch = 1 if self.dtype == "int8" else BATCH
        try:
            self.path = exported_model(self.model, self._digest, backend)
            self._digest = onnx_weights_digest(self.path)
            self._session = _session(ort, self.path)
        except ModelLoadError:
            raise
        except Exception as e:  # export or runtime errors: this model cannot run here
            raise ModelLoadError(f"cannot run model {model!r} on ONNX Runtime: {e}") from e
        self._input_names = [i.name for i in self._session.get_inputs()]
        self._after_transformer = list(self.model)[1:]  # pooling, normalization ...
        self._truncating = self._chunking_tokenizer(self.model)
        self._truncating.enable_truncation(self.max_seq_length)
        self.model[0].auto_model.to("meta")  # the session holds the weights now
        self.threads = 0
        self._pool: tuple[int, int, ThreadPoolExecutor] | None = None  # pid, threads, pool

    def set_cpu_threads(self, threads: int) -> None:
        """Run on ``threads`` threads (0: the CPUs this process may use); see
        embedders.limit_cpu_threads."""
        with self._lock:
            self.threads = threads
            self._pool = None

    def _runner(self) -> tuple[int, ThreadPoolExecutor]:
        """This process's threads (a forked child makes its own)."""
        if self._pool is None or self._pool[0] != os.getpid():
            threads = self.threads or len(os.sched_getaffinity(0))
            self._pool = (os.getpid(), threads, ThreadPoolExecutor(threads, "autoembed-onnx"))
        return self._pool[1:]

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        encodings = self._truncating.encode_batch(texts)
        by_length: dict[int, list[int]] = {}
        for i, e in enumerate(encodings):
            by_length.setdefault(len(e.ids), []).append(i)
        with self._lock:
            threads, pool = self._runner()
            runs = []
            for rows in by_length.values():
                size = max(1, min(self.batch, -(-len(rows) // threads)))  # every thread busy
                runs += [rows[start : start + size] for start in range(0, len(rows), size)]
            done = pool.map(lambda rows: self._run([encodings[i] for i in rows]), runs)
            for rows, vectors in zip(runs, done, strict=True):
                out[rows] = vectors
        return out

    def _run(self, encodings: list[Any]) -> npt.NDArray[np.float32]:
        """The vectors of encodings of one length, by one run of the graph."""
        import torch

        inputs = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        (tokens,) = self._session.run(
            ["token_embeddings"], {n: inputs[n] for n in self._input_names}
        )
        features: dict[str, Any] = {
            "token_embeddings": torch.from_numpy(tokens),
            "attention_mask": torch.ones(tokens.shape[:2], dtype=torch.int64),
        }
        with torch.inference_mode():
            for module in self._after_transformer:
                features = module(features)
        return np.asarray(features["sentence_embedding"].numpy(), dtype=np.float32)


def _session(ort: Any, path: Path) -> Any:
    """A session whose runs each take one thread (the caller's)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------- export


def exported_model(model: Any, source_digest: str, backend: str) -> Path:
    """The cached ONNX file of ``model`` (whose weights have
    ``source_digest``) for ``backend``, exported first if need be."""
    root = cache_root()
    folder = root / f"{source_digest[:16]}-{backend}-r{RECIPE}"
    target = folder / "model.onnx"
    if target.is_file():
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
    except OSError as e:
        raise ModelLoadError(
            f"cannot write the ONNX export cache {root}: {e}; "
            "set AUTOEMBED_ONNX_CACHE to a writable folder"
        ) from e
    try:
        _export(model, scratch, backend)
        try:
            scratch.rename(folder)
        except OSError:
            if not target.is_file():  # not another process's finished export
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _token_embeddings(transformer: Any, names: list[str]) -> Any:
    """The transformer as a module of positional inputs, for the exporter."""
    import torch

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *inputs: Any) -> Any:
            named = dict(zip(names, inputs, strict=True))
            return self.transformer(**named, return_dict=True).last_hidden_state

    return TokenEmbeddings().eval()


def _export(model: Any, folder: Path, backend: str) -> None:
    """Export the model's transformer (inputs: token ids and types; output:
    token embeddings) to folder/model.onnx, quantized for onnx-int8.

    The recipe (RECIPE): the TorchScript exporter (torch.export does not
    handle every transformer yet) with plain ("eager") attention, which ONNX
    Runtime runs faster on a CPU than the exported SDPA; int8: dynamic
    quantization of the weight matrices, per channel, on 7 bits
    (reduce_range), so that the vectors are the same on CPUs with and
    without VNNI (on AVX2 alone, 8-bit weights could saturate)."""
    import torch

    transformer = model[0].auto_model
    tokenize = getattr(model, "preprocess", None) or model.tokenize
    sample = tokenize(["autoembed exports this model"])
    names = [n for n in _INPUTS if n in sample]
    fp32 = folder / "fp32.onnx"
    attention = transformer.config._attn_implementation
    try:
        transformer.set_attn_implementation("eager")
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated
            torch.onnx.export(
                _token_embeddings(transformer, names),
                tuple(sample[n] for n in names),
                str(fp32),
                dynamo=False,
                input_names=names,
                output_names=["token_embeddings"],
                dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "token_embeddings"]},
                opset_version=17,
            )
    finally:
        transformer.set_attn_implementation(attention)
    if backend == "onnx-int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with _quantizer_quiet():
            quantize_dynamic(
                fp32,
                folder / "model.onnx",
                per_channel=True,
                reduce_range=True,
                weight_type=QuantType.QInt8,
            )
        fp32.unlink()
    else:
        fp32.rename(folder / "model.onnx")


@contextlib.contextmanager
def _quantizer_quiet() -> Iterator[None]:
    """No advice from the quantizer in worker logs (it warns on the root
    logger that static quantization wants pre-processing)."""

    def advice(record: logging.LogRecord) -> bool:
        return "quantization" not in record.pathname

    root = logging.getLogger()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def onnx_weights_digest(path: Path) -> str:
    """sha256 over the graph's weights (its initializers' dtype, shape and
    bytes), whatever the exporter named them or in which order."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph

    def tensors() -> Any:
        for tensor in graph.initializer:
            array = numpy_helper.to_array(tensor)
            raw = np.ascontiguousarray(array).tobytes()
            # keyed by content: the exporter's names are not stable
            yield hashlib.sha256(raw).hexdigest(), str(array.dtype), tuple(array.shape), raw

    return digest_tensors(tensors())
