"""Compiling the artifacts (build machine): compile, NVRTC-check, cut into skeletons."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from .environment import nvrtc_check
from .settings import FORMAT, FP16_REL_TOL, FP32_ABS_TOL, SPECS, VARIANTS, artifact_name, log
from .skeleton import fill, punch, skeleton_of
from .weights import (
    compiled_sources,
    folded_weights,
    seeded_weights,
    source_sha256,
    state_sha256,
)


def _capture_executable():
    """Let compile_network hand us its executable (to read the CUDA source it exports)."""
    import resdsl.backends.tvm as backend

    captured: dict[str, Any] = {}
    original = backend.write_artifact

    def write_artifact(executable, meta, out_dir):
        captured["executable"] = executable
        return original(executable, meta, out_dir)

    backend.write_artifact = write_artifact
    return captured


def compile_one(model, dtype, batch, variant, target, module, state, out_dir, seed, arch) -> dict:
    """Compile, NVRTC-check, punch; writes out_dir/{model.json,model.so.xz,holes.json}."""
    import resdsl
    from resdsl.backends.tvm import BuildOptions, compile_network, cuda_source

    name = out_dir.name
    spec = SPECS[model]
    net = resdsl.load(spec)
    captured = _capture_executable()
    options = BuildOptions(target=target, arch=arch if target == "cuda" else None, dtype=dtype,
                           batch=batch, **VARIANTS[variant])  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        compile_network(net, tmp, options, weights=module)
        compile_s = time.perf_counter() - start
        so = Path(tmp, "model.so").read_bytes()
        meta_text = Path(tmp, "model.json").read_text()
    entry: dict[str, Any] = {
        "name": name, "model": model, "dtype": dtype, "batch": batch, "variant": variant,
        "target": target,
        "arch": options.arch, "seed": seed, "compile_s": round(compile_s, 1),
        "so_bytes": len(so), "so_sha256": hashlib.sha256(so).hexdigest(),
    }  # fmt: skip
    if target == "cuda":
        source = cuda_source(captured["executable"]) if "executable" in captured else None
        entry["kernels"] = source.count("__global__") if source else None
        entry["nvrtc"] = (
            nvrtc_check(source, arch) if source else {"ok": None, "note": "no CUDA source found"}
        )
    _write_skeleton(so, meta_text, folded_weights(spec, state), entry, out_dir)
    return entry


def _write_skeleton(so: bytes, meta_text: str, folded, entry: dict, out_dir: Path) -> None:
    """Cut the weights out of ``so``, check that they go back in, write the artifact's files."""
    dtype = entry["dtype"]
    holes = punch(so, folded, dtype)
    skeleton = skeleton_of(so, holes)
    rebuilt = fill(skeleton, holes, folded, dtype)
    if hashlib.sha256(rebuilt).hexdigest() != entry["so_sha256"]:
        raise RuntimeError(f"{entry['name']}: the skeleton does not rebuild model.so")
    entry["holes"] = len(holes)
    entry["hole_bytes"] = sum(h["length"] for h in holes)
    entry["skeleton_bytes"] = len(skeleton)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / "model.json").write_text(meta_text)
    (out_dir / "model.so.xz").write_bytes(skeleton)
    (out_dir / "holes.json").write_text(json.dumps(holes) + "\n")
    (out_dir / "entry.json").write_text(json.dumps(entry, indent=1) + "\n")


def build_set(where: Path, configs, target: str, seed: int, force: bool, arch: str,
              keep=()) -> dict:  # fmt: skip
    """Compile ``configs`` into ``where/artifacts`` and write ``where/manifest.json``.

    ``keep``: other configurations whose artifacts, when built before and still up to date,
    stay in the manifest (``prepare --only`` adds to a bundle rather than replacing it). The
    manifest lists the artifacts in the order of ``keep`` + ``configs`` as given by the
    caller's full list (``order``), most important first."""
    import tvm

    import resdsl

    specs = where / "specs"
    specs.mkdir(parents=True, exist_ok=True)
    old = {}
    if (where / "manifest.json").is_file() and not force:
        old = {a["name"]: a for a in json.loads((where / "manifest.json").read_text())["artifacts"]}
    suffix = "" if target == "cuda" else f"-{target}"
    wanted = set(configs)
    kept = [c for c in keep if c not in wanted and artifact_name(*c) + suffix in old]
    order = {c: i for i, c in enumerate([*keep, *configs])}
    for name in {c[0] for c in [*configs, *kept]}:
        shutil.copy2(SPECS[name], specs / f"{name}.res")
    models: dict[str, Any] = {}
    artifacts: list[dict] = []
    failed: list[dict] = []  # compiles that raised, in the manifest for the report
    if (where / "manifest.json").is_file():  # earlier failures of configurations not retried
        before = json.loads((where / "manifest.json").read_text()).get("failed", [])
        retried = {artifact_name(*c) + suffix for c in configs}
        kept_names = {artifact_name(*c) + suffix for c in keep}
        failed += [f for f in before if f["name"] in kept_names - retried]
    cache: dict[str, Any] = {}
    todo = sorted([*configs, *kept], key=order.__getitem__)
    for i, config in enumerate(todo):
        model, dtype, batch, variant = config
        if model not in cache:
            cache[model] = seeded_weights(model, seed)
            models[model] = _model_record(specs / f"{model}.res", model, cache[model][1])
        module, state = cache[model]
        name = artifact_name(model, dtype, batch, variant) + suffix
        out_dir = where / "artifacts" / name
        prev = old.get(name)
        if _up_to_date(prev, models[model], tvm.__version__, out_dir):
            if config in wanted:
                log(f"  {name}: up to date (use --force to rebuild)")
            artifacts.append(prev)
            continue
        if config not in wanted:  # kept, but stale: left out of the manifest
            log(f"  {name}: out of date, left out (prepare --only {name} rebuilds it)")
            continue
        log(f"  {name}: compiling ...")
        args = (model, dtype, batch, variant, target, module, state, out_dir, seed, arch)
        try:
            entry = compile_one(*args)
        except Exception as e:  # a compiler error: the other artifacts still build
            lines = str(e).strip().splitlines() or [""]
            error = f"{type(e).__name__}: {lines[-1][:300]}"
            log(f"  {name}: FAILED to compile: {error}")
            failed.append({"name": name, "model": model, "dtype": dtype, "batch": batch,
                           "variant": variant, "error": error})  # fmt: skip
            continue
        files = compiled_sources()
        entry.update(
            state_sha256=models[model]["state_sha256"],
            spec_sha256=models[model]["spec_sha256"],
            resdsl_version=resdsl.__version__,
            source_files=files,
            source_sha256=source_sha256(files),
            tvm_version=tvm.__version__,
        )
        _log_compiled(name, entry)
        artifacts.append(entry)
        # written after each compile, with the earlier entries of those still to come (checked
        # again by the next prepare), so that a prepare cut short loses nothing it compiled
        later = [old[n] for c in todo[i + 1 :] if (n := artifact_name(*c) + suffix) in old]
        _write_manifest(where, seed, arch, {**_old_models(where), **models}, artifacts + later,
                        failed)  # fmt: skip
    return _write_manifest(where, seed, arch, models, artifacts, failed)


def _old_models(where: Path) -> dict:
    path = where / "manifest.json"
    return json.loads(path.read_text())["models"] if path.is_file() else {}


def _write_manifest(where: Path, seed: int, arch: str, models: dict, artifacts: list,
                    failed: list) -> dict:  # fmt: skip
    import tvm

    import resdsl

    used = {a["model"] for a in artifacts}
    manifest = {
        "format": FORMAT, "seed": seed, "arch": arch, "tvm_version": tvm.__version__,
        "resdsl_version": resdsl.__version__,
        "models": {k: v for k, v in models.items() if k in used}, "artifacts": artifacts,
        "failed": failed,
        "tolerances": {"float32_abs": FP32_ABS_TOL, "float16_rel": FP16_REL_TOL},
    }  # fmt: skip
    (where / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _model_record(spec: Path, model: str, state) -> dict[str, Any]:
    """A model's entry in the manifest: its spec, input shape, hashes and counts."""
    import resdsl

    net = resdsl.load(spec)
    return {
        "spec": f"specs/{model}.res",
        "input_shape": list(net.graph.info(net.graph.inputs[0]).shape),
        "spec_sha256": net.spec_hash,
        "state_sha256": state_sha256(state),
        "params": net.num_params,
        "macs": net.macs,
    }


def _up_to_date(prev, model: dict, tvm_version: str, out_dir: Path) -> bool:
    """Whether the artifact built before was built from the same weights, spec and code (the
    resdsl files its compile used, as they are now)."""
    return bool(
        prev
        and prev.get("state_sha256") == model["state_sha256"]
        and prev.get("spec_sha256") == model["spec_sha256"]
        and prev.get("source_sha256") == source_sha256(prev.get("source_files"))
        and prev.get("tvm_version") == tvm_version
        and (out_dir / "model.so.xz").is_file()
    )


def _log_compiled(name: str, entry: dict) -> None:
    """One line per compiled artifact; an NVRTC failure stops the build."""
    nv = entry.get("nvrtc", {})
    log(
        f"  {name}: compiled in {entry['compile_s']} s, model.so {entry['so_bytes'] / 1e6:.1f}"
        f" MB, {entry['holes']} constants punched out ({entry['hole_bytes'] / 1e6:.1f} MB), "
        f"skeleton {entry['skeleton_bytes'] / 1e6:.2f} MB"
        + (f"; {entry['kernels']} kernels" if "kernels" in entry else "")
        + (f"; NVRTC {nv['arch']}: ok in {nv['seconds']} s" if nv.get("ok") else "")
        + (f"; NVRTC: {nv['note']}" if nv and not nv.get("ok") else "")
    )
    if nv and nv.get("ok") is False:
        raise RuntimeError(f"{name}: {nv['note']}")
