"""The export pipeline: components -> capture -> lower per target -> bundle -> parity -> manifest.

Each stage is a function over plain objects (ComponentSpec, CapturedComponent, ExecuTorchProgram, bytes)
that tests call one by one; ``export_bundle`` runs them in order for a whole model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from edgesdk.export.bundle_writer import BundleWriter
from edgesdk.export.capture import CapturedComponent, ComponentSpec, capture
from edgesdk.export.fallback import MAX_FALLBACK_ROUNDS, LayerChoice, below_floor, floor_text
from edgesdk.export.onnx import lower_to_onnx, onnx_op_counts
from edgesdk.export.parity import EagerSession, compare
from edgesdk.export.tensorrt import build_engine, build_script, tensorrt_status
from edgesdk.quant.configs import FP32Config, QuantConfig
from edgesdk.quant.onnx_files import LargeOnnx, OnnxModel
from edgesdk.runtime.errors import EdgeSDKError

if TYPE_CHECKING:
    from edgesdk.runtime.backends import Session
    from edgesdk.runtime.bundle import Bundle

TARGETS = ("executorch", "onnx", "tensorrt")
Log = Callable[[str], None]


def release_memory() -> None:
    """Hand freed memory back to the system between stages. Lowering a large model (SD-1.5's UNet) leaves
    gigabytes that Python has freed but glibc keeps in its arenas; the parity stage then loads the programs on top.
    malloc_trim returns those pages; where there is no glibc (macOS, musl) only the collection runs. (The
    quantizer's own module caches are emptied where it runs: ``quant.pt2e.forget_cached_modules``.)"""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def parse_targets(text: str | list[str]) -> list[str]:
    names = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [t for t in names if t not in TARGETS]
    if unknown or not names:
        raise EdgeSDKError(f"unknown target(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
                           f"choose from {', '.join(TARGETS)}")
    return list(dict.fromkeys(names))


def lower_component(captured: CapturedComponent, targets: list[str], writer: BundleWriter, log: Log,
                    recipe: QuantConfig | None = None,
                    calibration: list[tuple[torch.Tensor, ...]] | None = None) -> dict:
    """Quantize (per the config: each target lowers the graph the config prepares and quantizes for it) and lower one
    captured component to every target; return its manifest entry."""
    from edgesdk.export.executorch import lower_to_executorch

    recipe = recipe or FP32Config()
    calibration = calibration or []
    spec = captured.spec
    feeds = [{n: t.numpy() for n, t in zip(spec.input_names, inputs, strict=True)} for inputs in calibration]
    tag = f" [{recipe.name}]"
    inputs, outputs = spec.io_metadata(captured.example_outputs)
    entry: dict = {"inputs": inputs, "outputs": outputs, "files": {}, "static_shapes": {},
                   "dynamic_dims": {"batch": {"min": 1, "max": spec.max_batch}}, "delegation": {}, "parity": {},
                   "fp32_weight_bytes": fp32_weight_bytes(captured.static)}
    if "executorch" in targets:
        log(f"  {spec.name}: lowering to ExecuTorch (XNNPACK){tag}")
        program = lower_to_executorch(executorch_programs(captured, recipe, calibration), spec.name)
        entry["files"]["executorch"] = add_model_file(writer, entry, "executorch", f"executorch/{spec.name}.pte",
                                                      program.buffer, recipe)
        entry["static_shapes"]["executorch"] = {"batch": spec.static_batch}
        if len(program.methods) > 1:  # batch -> method name, for the runtime to pick the exact fit
            entry["static_shapes"]["executorch"]["methods"] = {
                str(spec.static_batch if m == "forward" else int(m.removeprefix("forward_b"))): m
                for m in program.methods}
        entry["delegation"]["executorch"] = program.delegation.to_dict()
        if spec.binary_module is not None and recipe.binary_kernel:
            log(f"  {spec.name}: lowering the binary-kernel program to ExecuTorch (edgesdk::binary_conv2d + XNNPACK)")
            entry.setdefault("binary_kernel", {})["executorch"] = binary_program(writer, spec, program.methods)
    if "onnx" in targets:
        program = captured.dynamic
        if program is None:  # said aloud, not silent: the ONNX file then keeps the example's batch
            log(f"  {spec.name}: batch cannot be dynamic ({captured.why_static}); ONNX keeps batch {spec.static_batch}")
            program = captured.static
            entry["static_shapes"]["onnx"] = {"batch": spec.static_batch}
        log(f"  {spec.name}: exporting ONNX ({'dynamic' if captured.dynamic else 'static'} batch){tag}")
        program = recipe.prepare_graph(program, "onnx", spec.max_batch if captured.dynamic else None)
        data = lower_to_onnx(program, spec.input_names, spec.output_names, spec.name)
        data = recipe.quantize_onnx(data, feeds, "onnx")
        entry["delegation"]["onnx"] = {"onnx_ops": onnx_op_counts(data), **integer_share(data)}
        entry["files"]["onnx"] = add_model_file(writer, entry, "onnx", f"onnx/{spec.name}.onnx", data, recipe)
        if recipe.binary_kernel:
            add_binary_onnx(writer, entry, spec.name, data, log)
    if "tensorrt" in targets:
        log(f"  {spec.name}: exporting TensorRT-ready ONNX (static shapes){tag}")
        program = recipe.prepare_graph(captured.static, "tensorrt")
        data = lower_to_onnx(program, spec.input_names, spec.output_names, spec.name)
        data = recipe.quantize_onnx(data, feeds, "tensorrt")
        entry["files"]["tensorrt"] = writer.add_onnx(f"tensorrt/{spec.name}.onnx", data)
        entry["static_shapes"]["tensorrt"] = {"batch": spec.static_batch}
        can_build, why_not = tensorrt_status()
        if can_build:
            entry["tensorrt_engine"] = writer.add_bytes(f"tensorrt/{spec.name}.plan",
                                                        build_engine(writer.staging / entry["files"]["tensorrt"]))
        else:
            entry["tensorrt_engine"] = None
            entry["tensorrt_note"] = why_not
    return entry


def add_model_file(writer: BundleWriter, entry: dict, target: str, relpath: str, data: OnnxModel,
                   recipe: QuantConfig) -> str:
    """Write one model file, stored as the config says (1-bit weights: a ``.1bit`` container of runs of +-1.0f
    stored as bits, recorded under the entry's ``one_bit``)."""
    if isinstance(data, LargeOnnx):
        return writer.add_onnx(relpath, data)
    stored, suffix, record = recipe.stored(data)
    if record is not None:
        entry.setdefault("one_bit", {})[target] = record
    return writer.add_bytes(relpath + suffix, stored)


def binary_program(writer: BundleWriter, spec: ComponentSpec, methods: list[str]) -> dict:
    """``<component>.binary.pte``: the component with its binary convolutions as ``edgesdk::binary_conv2d.out``
    (1-bit weights as constants, in the kernel's layout: it reads them in place), everything else delegated to
    XNNPACK as in the float program, with the same methods (batch -> method), so a runtime may open either. Only the
    C++ runtime registers the kernel; the float program stays the fallback. Stored as it is: the packed weights are 1
    bit each already."""
    from edgesdk.export.capture import inputs_at_batch
    from edgesdk.export.executorch import lower_to_executorch
    from edgesdk.quant.binary_op import OUT_OVERLOAD, BinaryConvOp, packed_weight_bytes

    module = spec.binary_module.eval()
    layers = sum(isinstance(m, BinaryConvOp) for m in module.modules())
    if layers == 0:
        raise EdgeSDKError(f"component '{spec.name}' has no binary convolution to export as {OUT_OVERLOAD}")
    programs = {}
    with torch.no_grad():
        for method in methods:
            batch = spec.static_batch if method == "forward" else int(method.removeprefix("forward_b"))
            programs[method] = torch.export.export(module, inputs_at_batch(spec.example_inputs, batch))
    program = lower_to_executorch(programs, f"{spec.name} (binary kernel)")
    path = writer.add_bytes(f"executorch/{spec.name}.binary.pte", program.buffer)
    return {"file": path, "op": OUT_OVERLOAD, "binary_layers": layers,
            "packed_weight_bytes": packed_weight_bytes(module), "delegation": program.delegation.to_dict()}


def add_binary_onnx(writer: BundleWriter, entry: dict, component: str, data: OnnxModel, log: Log) -> None:
    """The second ONNX file of a binary network: its binary convolutions as ai.edgesdk::BinaryConv2d on 1-bit
    packed weights (export/binary_onnx.py), recorded under the entry's ``binary_kernel.onnx``. Runtimes with the op
    library open it; the others open the float graph beside it."""
    from edgesdk.export.binary_onnx import OP_NAME, rewrite_binary_convolutions

    if isinstance(data, LargeOnnx):  # a binary network past 2 GB of float weights is not a case that exists yet
        raise EdgeSDKError(f"component '{component}': the binary-kernel ONNX graph is written for models under 2 GB")
    binary = rewrite_binary_convolutions(data)
    relpath = writer.add_bytes(f"onnx/{component}.binary.onnx", binary.data)
    entry.setdefault("binary_kernel", {})["onnx"] = {"file": relpath, "op": OP_NAME,
                                                     "binary_layers": binary.binary_layers,
                                                     "packed_weight_bytes": binary.packed_weight_bytes}
    log(f"  {component}: ONNX with {binary.binary_layers} binary convolution(s) as {OP_NAME} "
        f"({binary.packed_weight_bytes} bytes of packed weights)")


def executorch_programs(captured: CapturedComponent, recipe: QuantConfig,
                        calibration: list[tuple[torch.Tensor, ...]]) -> dict[str, torch.export.ExportedProgram]:
    """The programs of one .pte: "forward" at the static batch, and "forward_b<N>" per extra batch. The extra ones
    come from the dynamic-batch capture, quantized once and captured at each batch, so every method carries the
    same quantization parameters (observers see the same calibration values either way)."""
    from edgesdk.export.capture import inputs_at_batch

    spec = captured.spec
    static, dynamic = captured.static, captured.dynamic
    extra = [b for b in spec.extra_batches if b != spec.static_batch]
    static = recipe.prepare_graph(static, "executorch")
    if dynamic is not None and extra:
        dynamic = recipe.prepare_graph(dynamic, "executorch", spec.max_batch)
    programs = {"forward": recipe.quantize_program(static, calibration, spec.example_inputs)}
    if extra:
        if dynamic is None:
            raise EdgeSDKError(f"component '{spec.name}' asks for ExecuTorch batches {extra} but its batch cannot be "
                               f"made dynamic ({captured.why_static})")
        examples = tuple(dynamic.example_inputs[0])
        module = recipe.quantized_module(dynamic, calibration, examples)
        with torch.no_grad():
            for batch in extra:
                programs[f"forward_b{batch}"] = torch.export.export(module, inputs_at_batch(spec.example_inputs, batch))
    return programs


def fp32_weight_bytes(program: torch.export.ExportedProgram) -> int:
    """Bytes the component's weights take as fp32: the yardstick `edgesdk bench` checks resident memory against."""
    tensors = [*program.state_dict.values(), *program.constants.values()]
    return int(sum(t.numel() * 4 for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point()))


def integer_share(data: OnnxModel) -> dict:
    """How much of the matrix work ONNX Runtime will run in integer kernels (read off its session graph)."""
    import tempfile

    from edgesdk.runtime.memory import integer_kernel_share, session_graph

    if isinstance(data, LargeOnnx):
        return integer_kernel_share(session_graph(data.path))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(data)
        return integer_kernel_share(session_graph(path))


def run_parity(bundle_dir: Path, specs: list[ComponentSpec], targets: list[str], log: Log,
               sqnr_floor_db: float | None = None, refuse: bool = True,
               top1_floor: float | None = None) -> dict[str, dict]:
    """Each exported file, opened by the runtime, against eager PyTorch on the component's evaluation inputs (held-out
    data where the spec has some, else its example inputs); SQNR over all of them, and top-1 / top-5 agreement for
    classifier outputs (N, classes).

    Every target of every component is judged before any is refused: the error lists each one below the floor
    (``refuse=False``: the caller judges, ``below_floor``).
    The TensorRT-ready ONNX is checked on ONNX Runtime's CPU provider (no GPU here): it proves the graph
    computes the right function; the engine itself is checked where it is built.
    """
    from edgesdk.export.parity import topk_agreement
    from edgesdk.runtime.backends import OnnxSession, StaticBatchSession, open_session
    from edgesdk.runtime.bundle import Bundle

    bundle = Bundle.open(bundle_dir)
    results: dict[str, dict] = {}
    checked = [*targets, *(["onnx-binary"] if "onnx" in targets and _binary_graph_runs(bundle) else [])]
    for spec in specs:
        batches = spec.evaluation_inputs or (spec.example_inputs,)
        feeds = [{n: t.numpy() for n, t in zip(spec.input_names, inputs, strict=True)} for inputs in batches]
        eager = EagerSession(spec.module, spec.input_names, spec.output_names)
        reference = _stacked([eager.run(feed) for feed in feeds])
        results[spec.name] = {}
        where = f"{len(batches)} held-out batch{'es' if len(batches) > 1 else ''}" if spec.evaluation_inputs \
            else "the example input"
        for target in checked:
            if target in ("onnx", "onnx-binary") and bundle.component(spec.name).binary_kernel.get("onnx"):
                session = _bnn_onnx_session(bundle, spec, binary=target == "onnx-binary")
            elif target == "tensorrt":
                info = bundle.component(spec.name)
                session = StaticBatchSession(OnnxSession(bundle.path_of(info.files["tensorrt"]), info,
                                                             reference_kernels=True),
                                             spec.static_batch, info.inputs)
            else:
                # lean: the program file is mapped, not copied (SD-1.5's UNet program is ~1 GB)
                session = open_session(bundle, spec.name, target, lean_memory=True)
            try:
                got = _stacked([session.run(feed) for feed in feeds])
            except EdgeSDKError:
                raise
            except Exception as exc:  # the exported file does not run: say which, on what
                first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise EdgeSDKError(f"the exported {target} file of component '{spec.name}' failed to run in the "
                                   f"runtime: {first_line}") from exc
            figures = {}
            for name in spec.output_names:
                figures[name] = compare(reference[name], got[name])
                figures[name].update(topk_agreement(reference[name], got[name]) or {})
            results[spec.name][target] = figures
            worst = max(v["rel_max_abs"] for v in figures.values())
            sqnr = min(v["sqnr_db"] for v in figures.values())
            top1 = [v["top1_agreement"] for v in figures.values() if "top1_agreement" in v]
            agreement = f"  top-1 agreement {min(top1):.1%}" if top1 else ""
            log(f"  parity {spec.name:12s} {target:10s} max-abs/range {worst:.2e}  SQNR {sqnr:.1f} dB{agreement} "
                f"({where})")
            del session, got  # one runtime session at a time
            release_memory()
    below = below_floor(results, sqnr_floor_db, top1_floor)
    if below and refuse:
        raise EdgeSDKError(f"parity vs eager fp32 below the recipe's floor of {floor_text(sqnr_floor_db, top1_floor)}: "
                           f"{', '.join(b.what for b in below)}; nothing was written (try more calibration samples, "
                           "--fallback auto, or a milder recipe)")
    return results


def _binary_graph_runs(bundle: Bundle) -> bool:
    """Whether this machine runs the binary-kernel ONNX graphs the bundle offers (the op library is built): then
    parity checks them too, as target "onnx-binary"; elsewhere only the float graph can be checked."""
    from edgesdk.runtime.binary_ops import onnx_kernel_choice

    return any(info.binary_kernel.get("onnx") and onnx_kernel_choice(bundle, info).library is not None
               for info in bundle.components.values())


def _bnn_onnx_session(bundle: Bundle, spec: ComponentSpec, binary: bool) -> Session:
    """A session on one ONNX graph of a component that offers two (float, binary kernel), chosen here rather than
    by the runtime, so that the manifest's "onnx" parity is always the float graph's."""
    from edgesdk.runtime.backends import OnnxSession, StaticBatchSession
    from edgesdk.runtime.binary_ops import onnx_kernel_choice

    info = bundle.component(spec.name)
    choice = onnx_kernel_choice(bundle, info)
    if binary:
        session = OnnxSession(choice.path, info, custom_ops_library=choice.library)
    else:
        session = OnnxSession(bundle.path_of(info.files["onnx"]), info)
    return StaticBatchSession(session, spec.max_batch, info.inputs, pad=False)


def _stacked(outputs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-batch output dicts -> one dict of arrays concatenated along the batch."""
    return {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}


def export_bundle(specs: list[ComponentSpec], *, family: str, model_meta: dict, assets: dict[str, object],
                  task: str | None = None,
                  targets: list[str], output: Path, overwrite: bool = False, recipe: QuantConfig | None = None,
                  calibration: dict[str, list[tuple[torch.Tensor, ...]]] | None = None,
                  quality: Callable[[Path], dict] | None = None, log: Log = print,
                  sensitivity: bool = False) -> Path:
    """Capture, lower, write, check parity, and commit a bundle. Nothing is left behind on failure. ``task``: the
    runtime task that opens it (``edgesdk.runtime.tasks``); None leaves it to the reader (``Bundle.task``).
    ``sensitivity``: with a recipe that quantizes layer by layer, measure and record each layer's sensitivity (always
    done for ``--fallback``); with ``--fallback auto`` the bundle is lowered again, with more layers in fp32, until
    every target meets the floor (``LayerChoice``)."""
    # the installed distribution's version: the export room does not import the edgesdk front package
    from importlib.metadata import version

    torch.manual_seed(0)
    recipe = recipe or FP32Config()
    recipe.check_targets(targets)
    if getattr(recipe, "fallback", "none") != "none" and not calibration:
        raise EdgeSDKError("--fallback needs calibration data: the layers are chosen on it")
    writer = BundleWriter(output, overwrite=overwrite)
    try:
        asset_paths: dict[str, str] = {}
        for name, value in assets.items():
            if isinstance(value, np.ndarray):
                asset_paths[name] = writer.add_array(f"assets/{name}.npy", value)
            else:
                asset_paths[name] = writer.add_json(f"assets/{name}.json", value)
        choice = LayerChoice(recipe, sensitivity, log, components=len(specs))
        for round_number in range(1, MAX_FALLBACK_ROUNDS + 1):
            components: dict[str, dict] = {}
            for spec in specs:
                log(f"capturing {spec.name} with torch.export")
                captured = capture(spec, dynamic_batch="onnx" in targets or bool(spec.extra_batches))
                spec_calibration = (calibration or {}).get(spec.name)
                component_recipe = choice.recipe_for(captured, spec_calibration)
                components[spec.name] = lower_component(captured, targets, writer, log, component_recipe,
                                                        spec_calibration)
                components[spec.name].update(choice.manifest_entry(spec.name))
                del captured  # the captured and lowered programs are written: free them before the next component
                release_memory()
            if "tensorrt" in targets:
                script = build_script({n: c["files"]["tensorrt"] for n, c in components.items()})
                writer.add_bytes("tensorrt/build_engines.sh", script.encode())
            quantization = {"recipe": recipe.name, **recipe.to_dict()}
            if recipe.per_layer_choice:
                quantization["fallback"] = {"mode": getattr(recipe, "fallback", "none"), "rounds": round_number,
                                            "layers": choice.float_layers()}
            # every bundle says what it does: readers refuse a family they do not know that names no task
            written_task = task or model_meta.get("task") or ("text-to-image" if "latent_channels" in model_meta
                                                             else "run")
            manifest = {"family": family, "task": written_task,
                        "created_by": f"edgesdk {version('edgesdk')}", "quantization": quantization,
                        "model": model_meta, "assets": asset_paths, "components": components}
            writer.write_manifest(manifest)
            release_memory()
            log("checking parity against eager PyTorch")
            results = run_parity(writer.staging, specs, targets, log, recipe.sqnr_floor_db, refuse=not choice.auto,
                                 top1_floor=recipe.top1_floor)
            for name, figures in results.items():
                components[name]["parity"] = figures
            below = below_floor(results, recipe.sqnr_floor_db, recipe.top1_floor)
            if not below:
                break
            choice.widen(below, last_round=round_number == MAX_FALLBACK_ROUNDS)
        if quality is not None:  # end-to-end figures the family knows how to measure (e.g. prompt accuracy)
            writer.write_manifest(manifest)
            manifest["quality"] = quality(writer.staging)
        writer.write_manifest(manifest)
        return writer.commit()
    except BaseException:
        writer.abort()
        raise
