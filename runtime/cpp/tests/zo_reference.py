"""Reference data for the C++ ZO tests (test_random, test_zo, test_safetensors): numpy's streams and Python's trainer.

    python tests/zo_reference.py OUTDIR      (the C++ tests run it with OUTDIR = $EDGESDK_CPP_FIXTURES/zo)

Writes, into OUTDIR:
  random.json              numpy Generator(PCG64(seed)) draws for several seeds, 64-bit values as hex strings
  config.json              ZOConfig.to_json() for a few configs and the validation messages of bad ones
  trajectory.json          runtime/zo.py's ZOTrainer on the synthetic problem below: θ after every step, final m, v, P
  trajectory_estimator.json  the same with the estimator options (two-sided, two draws per step, cosine lr, word
                             directions)
  python.safetensors       a file from safetensors.numpy.save_file, read by the C++ reader
  single.safetensors       one tensor, one metadata key: the C++ writer must produce the same bytes
  multi.safetensors        python.safetensors' tensors with one metadata key: the same again, several dtypes
  done                     written last (holds VERSION): the tests rerun this script when it is missing or old

Doubles are written as float.hex() strings (exact; C++'s strtod reads them). The synthetic problem's losses are
plain Python float arithmetic in a fixed order, so that the C++ copy of it in test_zo.cpp computes the same bits.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.zo import ZOConfig, ZOTrainer, word_direction_basis

SEEDS = [0, 1, 7, 12345, 2**40]
NORMAL_DRAWS = 1_000_000
ZIGGURAT_R = 3.6541528853610087963519472518  # beyond it, standard_normal takes the tail branch

# ---- the synthetic problem (copied in test_zo.cpp: change both together) ----
DIM = 48
NOISE_SHAPE = (3, 4, 4)  # 48 values
IMAGES = 3
TEMPLATES = 5
T = 1000


def target(image: int, j: int) -> float:
    return ((7 * j + 13 * image) % 17) / 17.0 - 0.5


def initial_theta() -> list[float]:
    return [((5 * j) % 11) / 11.0 - 0.3 for j in range(DIM)]


WORDS = 24  # rows of the synthetic "word embeddings" behind direction_basis (rank 23 > tau - 1: SG sees no
#             degenerate trajectory, as with tiny-sd: 29 words, tau 21)


def word_embeddings() -> np.ndarray:
    """(WORDS, DIM) float32 stand-ins for a vocabulary's embeddings (test_zo.cpp computes the same values)."""
    return np.array([[((3 * w + 7 * j) % 13) / 13.0 - 0.4 + 0.05 * w for j in range(DIM)] for w in range(WORDS)],
                    dtype=np.float32)


class Synthetic:
    """Draws like TokenLoss.draw (image, flip, template, float32 noise, t); a smooth nonlinear loss of θ."""

    dim = DIM
    num_timesteps = T
    direction_basis = word_direction_basis(word_embeddings())

    def draw(self, rng: np.random.Generator, t_range: tuple[int, int]) -> tuple:
        image = int(rng.integers(IMAGES))
        flip = bool(rng.random() < 0.5)
        template = int(rng.integers(TEMPLATES))
        noise = rng.standard_normal(NOISE_SHAPE).astype(np.float32)
        t = int(rng.integers(t_range[0], t_range[1]))
        return image, flip, template, noise, t

    def losses(self, sample: tuple, thetas: np.ndarray) -> np.ndarray:
        image, flip, template, noise, t = sample
        e = [float(x) for x in noise.reshape(-1)]  # float32 -> float64, exact
        if flip:
            e = e[::-1]
        a = t / 1000.0
        w = 1.0 + 0.25 * template
        out = []
        for row in thetas:
            th = [float(x) for x in row]  # float32 -> float64, exact
            squares = 0.0
            dot = 0.0
            quartic = 0.0
            for j in range(DIM):
                r = th[j] - target(image, j) - 0.1 * a * e[j]
                squares += r * r
                dot += th[j] * e[j]
                quartic += th[j] * th[j] * th[j] * th[j]
            out.append(w * squares + 0.01 * dot * dot + 0.05 * quartic)
        return np.array(out)


def u64(x: int) -> str:
    return f"{int(x):016x}"


def f64(x: float) -> str:
    return float(x).hex()


def state_json(bit_generator: np.random.BitGenerator) -> dict:
    s = bit_generator.state
    mask = (1 << 64) - 1
    return {"state_high": str(s["state"]["state"] >> 64), "state_low": str(s["state"]["state"] & mask),
            "inc_high": str(s["state"]["inc"] >> 64), "inc_low": str(s["state"]["inc"] & mask),
            "has_uint32": int(s["has_uint32"]), "uinteger": int(s["uinteger"])}


RANGES = [1, 2, 5, 1000, 2**31, 2**31 + 1, 3 * 2**30, 2**32 - 1, 2**32, 2**32 + 1, 2**33, 2**40, 2**62 + 12345]


def operations(seed: int) -> list[list]:
    """An interleaving of every kind of draw, decided by a separate generator."""
    plan = np.random.default_rng(1000 + seed)
    ops: list[list] = []
    for _ in range(3000):
        kind = int(plan.integers(6))
        if kind == 0:
            ops.append(["uint64"])
        elif kind == 1:
            ops.append(["uint32"])
        elif kind == 2:
            ops.append(["random"])
        elif kind == 3:
            ops.append(["normal"])
        else:
            span = RANGES[int(plan.integers(len(RANGES)))]
            low = int(plan.integers(-1000, 1000)) if plan.random() < 0.5 else 0
            ops.append(["integers", str(low), str(low + span)])
    # the widest spans an int64 can hold: 64-bit Lemire with frequent rejections
    ops.append(["integers", str(-(2**63)), str(2**63 - 1)])
    ops.append(["integers", str(-(2**62)), str(2**62 + 3)])
    return ops


def random_reference() -> dict:
    out: dict = {}
    for seed in SEEDS:
        entry: dict = {"seed": str(seed)}
        entry["seed_sequence_words"] = [int(w) for w in np.random.SeedSequence(seed).generate_state(8, np.uint32)]
        g = np.random.Generator(np.random.PCG64(seed))
        entry["initial_state"] = state_json(g.bit_generator)
        entry["uint64"] = [u64(x) for x in g.bit_generator.random_raw(1000)]
        g = np.random.Generator(np.random.PCG64(seed))
        entry["random"] = [f64(x) for x in g.random(1000)]
        g = np.random.Generator(np.random.PCG64(seed))
        entry["normal"] = [f64(x) for x in g.standard_normal(1000)]
        g = np.random.Generator(np.random.PCG64(seed))
        many = g.standard_normal(NORMAL_DRAWS)
        entry["normal_bits_sum"] = u64(int(np.sum(many.view(np.uint64), dtype=np.uint64)))
        tail = np.flatnonzero(np.abs(many) > ZIGGURAT_R)
        assert len(tail) > 0
        entry["normal_tail_count"] = len(tail)
        entry["normal_tail"] = [[int(i), f64(many[i])] for i in tail[:50]]
        entry["normal_state_after"] = state_json(g.bit_generator)

        g = np.random.Generator(np.random.PCG64(seed))
        bg = g.bit_generator
        results = []
        ops = operations(seed)
        for op in ops:
            if op[0] == "uint64":
                results.append(u64(bg.random_raw()))
            elif op[0] == "uint32":
                results.append(u64(bg.ctypes.next_uint32(bg.ctypes.state)))
            elif op[0] == "random":
                results.append(f64(g.random()))
            elif op[0] == "normal":
                results.append(f64(g.standard_normal()))
            else:
                results.append(u64(int(g.integers(int(op[1]), int(op[2]))) & ((1 << 64) - 1)))
        entry["ops"] = ops
        entry["results"] = results
        entry["state_after_ops"] = state_json(bg)
        # a state with a buffered 32-bit half, as a checkpoint might hold it
        while not bg.state["has_uint32"]:
            bg.ctypes.next_uint32(bg.ctypes.state)
        entry["buffered_state"] = state_json(bg)
        entry["after_buffered"] = [u64(bg.ctypes.next_uint32(bg.ctypes.state)), u64(bg.random_raw())]
        out[str(seed)] = entry
    return out


BAD_CONFIGS = [{"n": 0}, {"mu": 0.0}, {"mu": float("nan")}, {"lr": -1.0}, {"steps": -1}, {"beta1": 1.0},
               {"beta2": -0.5}, {"adam_eps": 0.0}, {"sg_tau": 1}, {"sg_nu": 0.0}, {"sg_nu": 1.0},
               {"t_low_frac": 0.9, "t_high_frac": 0.5}, {"t_high_frac": 1.5}, {"checkpoint_every": 0},
               {"seed": -1}, {"mu": -1e-20}, {"lr": -123456789012345678.0}, {"sg_nu": -0.00012}, {"lr": float("inf")},
               {"draws": 0}]


def config_reference() -> dict:
    messages = []
    for bad in BAD_CONFIGS:
        try:
            ZOConfig(**bad)
        except EdgeSDKError as e:
            messages.append({"change": {k: f64(v) if isinstance(v, float) else v for k, v in bad.items()},
                             "message": str(e)})
        else:
            raise AssertionError(f"{bad} was accepted")
    configs = [ZOConfig(), ZOConfig(n=3, mu=1e-2, lr=2e-2, sg=False, sg_tau=7, puts=False, t_low_frac=0.7,
                                    dim_scale=False, checkpoint_every=5, seed=12, steps=99, sg_standardize=False,
                                    two_sided=True, draws=2, cosine_lr=True, word_directions=True)]
    return {"messages": messages, "configs": [c.to_json() for c in configs]}


TRAJECTORY_STEPS = 60


def estimator_config() -> ZOConfig:
    """The estimator options on top of the synthetic config (test_zo.cpp's estimator_config(): change both). SG is
    off: its SVD is compared by trajectory.json, and here its projection (which the two SVDs give to ~1e-12) would
    be amplified by this fast-moving trajectory into differences that hide the options' own arithmetic."""
    return ZOConfig(sg=False, sg_tau=16, seed=3, lr=2e-2, steps=TRAJECTORY_STEPS, n=3, two_sided=True, draws=2,
                    cosine_lr=True,
                    word_directions=True)


def trajectory_reference(config: ZOConfig | None = None) -> dict:
    config = config or ZOConfig(sg_tau=16, seed=3, lr=2e-2, steps=TRAJECTORY_STEPS)
    trainer = ZOTrainer(Synthetic(), config, np.array(initial_theta()))
    thetas, losses, ks, coefficients = [], [], [], []
    for _ in range(TRAJECTORY_STEPS):
        log = trainer.step()
        thetas.append([f64(x) for x in trainer.theta])
        losses.append(f64(log.loss))
        ks.append(log.k)
        coefficients.append([f64(c) for c in log.coefficients])
    p = trainer.sg.P if trainer.sg is not None and trainer.sg.P is not None else np.zeros((0, DIM))
    return {"config": config.to_json(), "dim": DIM, "steps": TRAJECTORY_STEPS,
            "theta0": [f64(x) for x in initial_theta()], "theta": thetas, "loss": losses, "k": ks,
            "coefficients": coefficients, "m": [f64(x) for x in trainer.adam.m], "v": [f64(x) for x in trainer.adam.v],
            "P": [[f64(x) for x in row] for row in p], "rng_state": state_json(trainer.rng.bit_generator)}


def svd_reference() -> dict:
    """Matrices and numpy.linalg.svd's answers: random, rank-deficient (centred), tall and with zero columns."""
    r = np.random.default_rng(11)
    cases = {}
    walk = np.cumsum(r.standard_normal((16, 40)), axis=0)
    with_zero = r.standard_normal((6, 9))
    with_zero[:, [2, 5]] = 0.0
    low_rank = r.standard_normal((12, 3)) @ r.standard_normal((3, 30))
    matrices = {"random": r.standard_normal((8, 20)), "centred_walk": walk - walk.mean(axis=0),
                "tall": r.standard_normal((30, 5)), "zero_columns": with_zero, "low_rank": low_rank,
                "scaled": r.standard_normal((10, 10)) * np.logspace(-6, 3, 10)}
    for name, a in matrices.items():
        _, s, vt = np.linalg.svd(a, full_matrices=False)
        rank = int(np.count_nonzero(s > s[0] * max(a.shape) * np.finfo(np.float64).eps))
        cases[name] = {"rows": a.shape[0], "cols": a.shape[1], "matrix": [f64(x) for x in a.reshape(-1)],
                       "singular_values": [f64(x) for x in s], "rank": rank,
                       "vt": [f64(x) for x in vt[:rank].reshape(-1)]}
    return cases


def safetensors_reference(out: Path) -> None:
    from safetensors.numpy import save

    tensors = {"b": (np.arange(6, dtype=np.float32) / 8).reshape(2, 3), "a": np.array([0.5, -1.25, 3.0, 1e-300]),
               "c": np.array([-(2**40), 7], dtype=np.int64), "empty": np.zeros((0, 3), dtype=np.float64)}
    write_atomic(out / "python.safetensors", save(tensors, metadata={"format": "pt", "token": "<cat>"}))
    write_atomic(out / "multi.safetensors", save(tensors, metadata={"token": "<cat>"}))
    token = {"token": np.array([[0.25, -1.5, 3.0, 1e-3]], dtype=np.float32)}
    write_atomic(out / "single.safetensors", save(token, metadata={"token": "<cat>"}))


VERSION = "zo-reference-10"  # test_*.cpp regenerate the folder when `done` holds another version


def write_atomic(path: Path, data: bytes) -> None:
    """Tests may run this script concurrently: each file appears whole (same content from every writer)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "random.json", json.dumps(random_reference()).encode())
    write_atomic(out / "config.json", json.dumps(config_reference()).encode())
    write_atomic(out / "trajectory.json", json.dumps(trajectory_reference()).encode())
    write_atomic(out / "trajectory_estimator.json", json.dumps(trajectory_reference(estimator_config())).encode())
    write_atomic(out / "svd.json", json.dumps(svd_reference()).encode())
    safetensors_reference(out)
    write_atomic(out / "done", (VERSION + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
