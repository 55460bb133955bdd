"""The one training loop, and the only code that imports Accelerate (with trackers.py).

A backend says *what* to optimise (phases and losses); the trainer does the rest:
one Adam per phase, ``requires_grad`` only on the phase's modules, autocast, backward,
gradient averaging across processes, EMA of the generator, metrics.jsonl, fixed-seed
grids, atomic checkpoints and exact resume (nets, EMA, optimisers, RNG and data order).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import re
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import checkpoint as ckpt
from ..backends.base import Backend, Phase
from ..config import RunConfig, report_to
from ..errors import FgtoolError, Interrupted, NonFiniteLoss, OutOfMemory, WriteFailed, failed_allocation, out_of_memory
from ..nn.blocks import ema_update
from . import precision, trackers
from .allocator import keep_freed_memory
from .progress import Progress

# ----------------------------------------------------------------------------- helpers


def resolve_module(nets: dict[str, nn.Module], name: str) -> nn.Module:
    """``"Dc.info"`` -> nets["Dc"].info (a phase may train part of a net)."""
    root, _, rest = name.partition(".")
    m = getattr(nets[root], "_orig_mod", nets[root])  # see through torch.compile
    return m.get_submodule(rest) if rest else m


def phase_params(nets, phase: Phase) -> list[nn.Parameter]:
    seen, params = set(), []
    for name in phase.trains:
        for p in resolve_module(nets, name).parameters():
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": _np_state(), "python": _py_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _np_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]


def _py_state():
    version, internal, gauss = random.getstate()
    return [version, torch.tensor(internal, dtype=torch.int64), gauss]


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    name, keys, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = st["python"]
    random.setstate((version, tuple(int(x) for x in internal.tolist()), gauss))
    if "cuda" in st and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(st["cuda"])


def build_nets(backend: Backend, seed: int) -> dict[str, nn.Module]:
    torch.manual_seed(seed)  # identical init on every process
    return backend.build()


def make_backend(cfg: RunConfig) -> Backend:
    from .. import registry

    return registry.get(cfg.model)(cfg.model_cfg, cfg.data.size)


# ----------------------------------------------------------------------------- trainer


class Trainer:
    def __init__(self, cfg: RunConfig, out: str | Path, resume: bool = False, progress: bool = True,
                 log=None):
        from accelerate import Accelerator  # the only imports of accelerate in fgtool, with trackers.py
        from accelerate.utils import ProjectConfiguration

        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.log = log or (lambda msg: None)
        t = cfg.train
        if t.threads != "auto":
            torch.set_num_threads(t.threads)
        cpu = not torch.cuda.is_available()
        if cpu:  # reuse freed activation memory instead of faulting it in every step (allocator.py)
            keep_freed_memory()
        self.precision, source = precision.resolve(t.precision)
        if self.precision == "fp16" and cpu:
            how = "train.precision=fp16" if source == "train.precision" else "accelerate's mixed precision fp16"
            raise FgtoolError(f"{how} needs a GPU; on a CPU use bf16 or no")
        self.report_to = report_to(t.report_to)
        self._csv = trackers.csv_tracker(self.out / "metrics.csv") if "csv" in self.report_to else None
        log_with = [self._csv if n == "csv" else n for n in self.report_to] or None
        project = ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out / "tensorboard"))
        self.acc = Accelerator(mixed_precision=self.precision, cpu=cpu, log_with=log_with, project_config=project)
        self.device = self.acc.device
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        if t.batch_size % self.world:
            raise FgtoolError(f"train.batch_size={t.batch_size} must divide by the {self.world} processes")

        self.backend = make_backend(cfg)
        self.nets = build_nets(self.backend, t.seed)
        for m in self.nets.values():
            m.to(self.device)
            if t.channels_last:
                m.to(memory_format=torch.channels_last)
        self.ema = {k: copy.deepcopy(self.nets[k]).eval().requires_grad_(False)
                    for k in self.backend.ema if t.ema_decay > 0 and k in self.nets}
        self.phases = self.backend.phases()
        # fused Adam: one kernel over all of a phase's tensors (CPU and GPU); ~8x faster than
        # the per-tensor loop torch picks on a CPU for the 40M-parameter FineGAN generator
        fused = {"fused": True} if t.fused_adam else {"foreach": False}
        self.opts = {ph.name: torch.optim.Adam(phase_params(self.nets, ph), lr=ph.lr, betas=ph.betas, **fused)
                     for ph in self.phases}
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.step = 0
        self.last_good: Path | None = None
        self.saved_step: int | None = None  # step of the newest last.pt (None: no checkpoint yet)
        self.data_fingerprint: dict | None = None  # what the run trains on (checked by --resume)
        self._window: list[tuple[int, dict[str, str], dict[str, torch.Tensor]]] = []  # steps since last log
        if resume:
            self._load(self.out / "last.pt")
        # codes drawn inside the losses differ per process, but are reproducible
        if not resume:
            torch.manual_seed(t.seed * 1000 + 1 + self.rank)
            np.random.seed(t.seed + self.rank)
            random.seed(t.seed + self.rank)
        if t.compile:
            self.nets = {k: torch.compile(v) for k, v in self.nets.items()}

    # ------------------------------------------------------------------ checkpoints
    def raw_nets(self) -> dict[str, nn.Module]:
        """The nets, seen through torch.compile's wrappers."""
        return {k: getattr(v, "_orig_mod", v) for k, v in self.nets.items()}

    def _state(self) -> dict:
        raw = self.raw_nets()
        extra = {"scaler": self.scaler.state_dict()} if self.scaler else {}
        if self.data_fingerprint:
            extra["data"] = dict(self.data_fingerprint)
        return dict(config=self.cfg.to_dict(), step=self.step,
                    nets={k: v.state_dict() for k, v in raw.items()},
                    ema={k: v.state_dict() for k, v in self.ema.items()},
                    optim={k: v.state_dict() for k, v in self.opts.items()},
                    rng=rng_state(), extra=extra)

    def save(self) -> Path:
        if not self.acc.is_main_process:
            return self.out / "last.pt"
        with ckpt.signals_held():  # Ctrl-C or SIGTERM ends the run after both files and the bookkeeping
            return self._save()

    def _save(self) -> Path:
        state = self._state()
        path = self.out / f"step_{self.step:07d}.pt"
        last = self.out / "last.pt"
        # last.pt first: a kill between the two leaves a resumable run (the numbered file is
        # restored on resume); the other order could leave step_N.pt without any last.pt.
        # step_N.pt is a hard link to the same file, not a second copy
        written = None
        try:
            ckpt.save(last, **state)
            written = last
            self.saved_step = self.step
            ckpt.share(last, path)
        except OSError as e:  # WriteFailed: a full disk, a folder gone read-only or away
            where = f"{last} (step {self.step})" if written else (self.last_good or "none (no checkpoint yet)")
            raise WriteFailed(f"could not write checkpoint {e.filename or path} at step {self.step} "
                              f"({e.strerror or e}); training stopped; last good checkpoint: {where}; "
                              "make room and continue with --resume") from None
        self.last_good = path
        if self.cfg.train.keep != "all":
            old = sorted(self.out.glob("step_*.pt"))[: -self.cfg.train.keep]
            for f in old:
                f.unlink(missing_ok=True)
        return path

    def _load(self, path: Path) -> None:
        ck = ckpt.load(path)
        if ck["model"] != self.cfg.model:
            raise FgtoolError(f"{path} holds a '{ck['model']}' model, not '{self.cfg.model}'")
        try:
            for k, sd in ck["nets"].items():
                self.nets[k].load_state_dict(sd)
            for k, sd in ck["ema"].items():
                if k in self.ema:
                    self.ema[k].load_state_dict(sd)
            for k, sd in ck["optim"].items():
                if k in self.opts:
                    self.opts[k].load_state_dict(sd)
        except (RuntimeError, KeyError) as e:
            raise FgtoolError(f"{path} does not match this model config ({str(e).splitlines()[0][:120]})") from None
        if self.scaler and "scaler" in ck["extra"]:
            self.scaler.load_state_dict(ck["extra"]["scaler"])
        if ck["rng"]:
            set_rng_state(ck["rng"])
        self.step = ck["step"]
        self.saved_step = self.step
        self.last_good = path
        numbered = path.parent / f"step_{self.step:07d}.pt"
        if self.step > 0 and not numbered.exists() and self.acc.is_main_process:
            # killed between the writes of last.pt and step_N.pt: restore the numbered copy
            ckpt.share(path, numbered)
            self.last_good = numbered

    # ------------------------------------------------------------------ one iteration
    def _set_trainable(self, phase: Phase) -> None:
        for m in self.nets.values():
            m.requires_grad_(False)
        for name in phase.trains + phase.graph:
            resolve_module(self.nets, name).requires_grad_(True)

    def _sync_grads(self, opt: torch.optim.Optimizer) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist

        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        if grads:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= self.world
            off = 0
            for g in grads:
                g.copy_(flat[off:off + g.numel()].view_as(g))
                off += g.numel()

    @torch.no_grad()
    def start_phases(self) -> None:
        """Backend.on_phase_start for each phase whose schedule begins at this step, before
        any phase of the step runs: a change of state at a boundary is not a loss."""
        for phase in self.phases:
            if phase.start == self.step:
                self.backend.on_phase_start(phase.name, self.raw_nets(), self.step)

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        active = self.backend.ema_active
        for k, e in self.ema.items():  # a net whose EMA stops here takes the averaged weights
            if self.step > 0 and not active(k, self.step) and active(k, self.step - 1):
                getattr(self.nets[k], "_orig_mod", self.nets[k]).load_state_dict(e.state_dict())
        self.start_phases()
        batch["cache"] = {}  # per-iteration scratch a backend may share between phases
        parts: dict[str, torch.Tensor] = {}
        phase_of: dict[str, str] = {}  # loss part -> phase, for the non-finite message
        for phase in self.phases:
            if not phase.active(self.step):
                continue
            self._set_trainable(phase)
            opt = self.opts[phase.name]
            opt.zero_grad(set_to_none=True)
            with self.acc.autocast():
                out = self.backend.loss(phase.name, self.nets, batch, self.step)
            loss = out["loss"]
            if self.scaler:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
            self._sync_grads(opt)
            if self.scaler:
                self.scaler.step(opt)
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)  # not held through the other phases' activations
            for k, v in out.items():
                key = f"{phase.name}/{k}" if k == "loss" else k
                parts[key] = v.detach().float()
                phase_of[key] = phase.name
        if self.scaler:
            self.scaler.update()
        d = self.cfg.train.ema_decay
        for k, e in self.ema.items():
            if self.backend.ema_active(k, self.step):
                ema_update(e, self.nets[k], 0.0 if self.step < self.cfg.train.ema_start else d)
        self.step += 1
        if len(self._window) < 4096:  # fit() empties it every log row; callers of train_step alone may not
            self._window.append((self.step, phase_of, parts))  # no sync: read only when a log row is bad
        return parts

    # ------------------------------------------------------------------ pictures
    def inference_nets(self) -> dict[str, nn.Module]:
        nets = self.raw_nets()
        nets.update(self.ema)
        return nets

    @torch.no_grad()
    def save_grids(self) -> list[Path]:
        from ..io.images import save_grid

        nets = self.inference_nets()
        modes = {k: m.training for k, m in nets.items()}
        for m in nets.values():
            m.eval()
        g = torch.Generator().manual_seed(1234)  # fixed codes: grids are comparable over time
        try:
            with self.acc.autocast():
                grids = self.backend.grids(nets, g, "train")
        finally:
            for k, m in nets.items():
                m.train(modes[k])
        paths = []
        for name, grid in grids.items():
            p = self.out / "grids" / f"{name}_{self.step:07d}.png"
            save_grid(grid.images.float().cpu(), p, nrow=grid.nrow, row_labels=grid.row_labels,
                      col_labels=grid.col_labels, title=f"{name} @ step {self.step}")
            save_grid(grid.images.float().cpu(), self.out / f"{name}.png", nrow=grid.nrow,
                      row_labels=grid.row_labels, col_labels=grid.col_labels,
                      title=f"{name} @ step {self.step}")
            paths.append(p)
        self._log_images(paths)
        return paths

    # ------------------------------------------------------------------ trackers (--report-to)
    def _start_trackers(self) -> None:
        if self._csv is not None:
            self._csv.open(self.step)  # a resumed run drops the rows after its checkpoint
        kwargs = {"tensorboard": {"purge_step": self.step + 1}} if self.step > 0 else {}
        self.acc.init_trackers("fgtool", config=trackers.flat_config(self.cfg.to_dict()), init_kwargs=kwargs)

    def _log_images(self, paths: list[Path]) -> None:
        """The grids just written, as images for the trackers that take them (tensorboard, wandb)."""
        takers = [t for t in self.acc.trackers if t.name in ("tensorboard", "wandb")]
        if not takers or not self.acc.is_main_process:
            return
        from PIL import Image

        for p in paths:
            name = "grids/" + p.name.rsplit("_", 1)[0]
            with Image.open(p) as im:
                rgb = np.asarray(im.convert("RGB"))
            for t in takers:
                values, kwargs = trackers.image_values(name, t.name, rgb)
                t.log_images(values, step=self.step, **kwargs)

    # ------------------------------------------------------------------ the loop
    def fit(self, loader_fn, score=None) -> dict:
        """Run until ``train.steps``. ``loader_fn(start_step, rank, world)`` yields batches.
        ``score(step) -> {name: value}`` (``train.eval``), if given, scores each checkpoint just
        written; its row goes to metrics.jsonl and the trackers."""
        t = self.cfg.train
        self.out.mkdir(parents=True, exist_ok=True)
        metrics_path = self.out / "metrics.jsonl"
        if self.step == 0 and metrics_path.exists() and self.acc.is_main_process:
            metrics_path.unlink()  # fresh run in a folder we own
        elif self.step > 0 and metrics_path.exists() and self.acc.is_main_process:
            _truncate_metrics(metrics_path, self.step)  # rows after the checkpoint are replayed
        if self.acc.is_main_process:
            for f in _stale_temp_files(self.out):  # half-written files of a run killed mid-save
                f.unlink(missing_ok=True)
        if self.report_to and not self.acc.trackers:
            self._start_trackers()
        for m in self.nets.values():
            m.train()
        if self.step >= t.steps:
            return self._summary(0.0)
        loader = loader_fn(self.step, self.rank, self.world)
        if isinstance(loader, torch.utils.data.DataLoader) and loader.generator is None:
            # A DataLoader draws its workers' base seed from the *global* torch RNG each time
            # an iterator is made; a resumed run makes one more than an uninterrupted run, which
            # would shift every code drawn after the resume. Give it its own generator.
            loader.generator = torch.Generator().manual_seed(t.seed * 1000 + 2 + self.rank)
        sums: dict[str, torch.Tensor] = {}
        seen: dict[str, int] = {}
        count, t0, t_log = 0, time.time(), time.time()
        start_step = self.step
        bar = Progress(t.steps, self.step, enabled=self.progress and self.acc.is_main_process)
        try:
            with bar:
                for batch in loader:
                    batch = {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v)
                             for k, v in batch.items()}
                    if t.channels_last:
                        for k in ("image", "full"):
                            if k in batch:
                                batch[k] = batch[k].contiguous(memory_format=torch.channels_last)
                    parts = self.train_step(batch)
                    for k, v in parts.items():
                        sums[k] = sums[k] + v if k in sums else v.clone()
                        seen[k] = seen.get(k, 0) + 1  # lazy phases (every N, start/stop) log their own mean
                    count += 1
                    last = self.step >= t.steps
                    if self.step % t.log_every == 0 or last or self.step % t.ckpt_every == 0:
                        row = self._flush(sums, count, t_log, metrics_path, seen)
                        sums, seen, count, t_log = {}, {}, 0, time.time()
                        bar.update(self.step, row)
                    if self.step % t.ckpt_every == 0 or last:
                        self.save()  # before pictures: a picture must never cost a checkpoint
                        if score is not None:
                            self._score(score, metrics_path)
                    if self.step % t.sample_every == 0 or last:
                        self._pictures()
                    if last:
                        break
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: where it stopped, and how to go on
            where = (f"last checkpoint step {self.saved_step}; resume: fgtool train --resume --out {self.out}"
                     if self.saved_step is not None else "no checkpoint yet; start it again with the same command")
            raise Interrupted(f"interrupted at step {self.step}; {where}", getattr(e, "signum", 2)) from None
        except Exception as e:  # RAM or GPU memory too small for the size and batch: one line, not a trace
            amount = out_of_memory(e)
            if amount is None:
                raise
            raise OutOfMemory(self._oom_message(amount)) from None
        finally:
            close = getattr(getattr(loader, "_iterator", None), "_shutdown_workers", None)
            if close:
                close()
        self._check_in_sync()
        return self._summary((time.time() - t0) / max(1, self.step - start_step))

    def _oom_message(self, amount: str) -> str:
        d, t = self.cfg.data, self.cfg.train
        smaller = max(2, t.batch_size // 2)
        if self.saved_step is None:
            then = "no checkpoint yet; start it again with a smaller train.batch_size or data.size"
        else:
            then = (f"last checkpoint step {self.saved_step}; resume with a smaller batch: "
                    f"fgtool train --resume --out {self.out} --set train.batch_size={smaller}")
        return (f"out of memory in step {self.step + 1}{failed_allocation(amount)} at data.size={d.size}, "
                f"train.batch_size={t.batch_size}; {then}")

    def close(self) -> None:
        """Tear down the process group (several processes). A gloo group left for interpreter exit
        can abort the worker (SIGABRT, "terminate called without an active exception") after the
        run has finished and saved."""
        self.acc.end_training()

    def _check_in_sync(self) -> None:
        """Multi-process: every rank must hold the same weights (gradients are averaged)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        total = torch.stack([p.detach().float().sum() for m in self.nets.values() for p in m.parameters()]).sum()
        lo, hi = total.clone().reshape(1), total.clone().reshape(1)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        if not torch.allclose(lo, hi, rtol=1e-5, atol=1e-4):
            raise RuntimeError(f"processes diverged: parameter sums {lo.item()} vs {hi.item()}")

    def _flush(self, sums, count, t_log, metrics_path, seen: dict | None = None) -> dict:
        seen = seen or {}
        vals = {k: (v / seen.get(k, count)).item() for k, v in sums.items()}  # one sync per log row
        window, self._window = self._window, []
        bad = [k for k, v in vals.items() if not math.isfinite(v)]
        others_bad = False
        if self.world > 1:  # every rank stops, or the others would save the broken weights
            import torch.distributed as dist

            flag = torch.tensor([1.0 if bad else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            others_bad = not bad and flag.item() > 0
        if bad or others_bad:
            where = f"{self.last_good}" if self.last_good else "none (no checkpoint yet)"
            what = _first_non_finite(window) if bad else "on another process"
            raise NonFiniteLoss(f"loss became non-finite {what}; stopped before step {self.step} was logged "
                                f"or saved; last good checkpoint: {where}")
        row = {"step": self.step, **{k: round(v, 6) for k, v in vals.items()},
               "it_s": round(count / max(1e-9, time.time() - t_log), 4)}
        if self.acc.is_main_process:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            if self.acc.trackers:
                self.acc.log({k: v for k, v in row.items() if k != "step"}, step=self.step)
        return row

    def _score(self, score, metrics_path: Path) -> None:
        """Score the checkpoint just saved (main process; the others wait at the next gradient
        sync). The global RNG state is put back afterwards, so a run with ``train.eval`` trains
        exactly as one without it, and a resumed run as an uninterrupted one."""
        if not self.acc.is_main_process:
            return
        state = rng_state()
        try:
            vals = score(self.step)
        finally:
            set_rng_state(state)
        row = {"step": self.step, **{f"eval/{k}": round(float(v), 6) for k, v in vals.items()}}
        with open(metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.acc.trackers:
            self.acc.log({k: v for k, v in row.items() if k != "step"}, step=self.step)

    def _pictures(self) -> None:
        try:
            self.save_grids()
            self.plot_losses()
        except (OSError, ValueError, RuntimeError, ImportError) as e:  # a full disk, a bad font...
            warnings.warn(f"could not write grids/loss curve at step {self.step}: {e}", stacklevel=2)

    def plot_losses(self) -> Path | None:
        if not self.acc.is_main_process:
            return None
        from ..io.plots import plot_metrics

        return plot_metrics(self.out / "metrics.jsonl", self.out / "loss_curve.png")

    def _summary(self, sec_per_it: float) -> dict:
        return {"run": str(self.out), "model": self.cfg.model, "step": self.step,
                "checkpoint": str(self.out / "last.pt"),
                "sec_per_it": round(sec_per_it, 4), "device": str(self.device),
                "precision": self.precision, "processes": self.world}


_OWN_TEMP = re.compile(r"\.(?:last\.pt|step_\d+\.pt|config\.json|metrics\.jsonl|metrics\.csv|[\w-]+\.png)\..+\.tmp")


def _stale_temp_files(out: Path) -> list[Path]:
    """Temp files that fgtool's atomic writers leave when killed mid-write (and nothing else)."""
    return [f for d in (out, out / "grids") if d.is_dir() for f in d.iterdir()
            if f.is_file() and _OWN_TEMP.fullmatch(f.name)]


def _first_non_finite(window) -> str:
    """'in step 7, phase G (G/loss, info_c)': the first step of the window with a NaN/inf part,
    grouped by phase in the order the phases ran."""
    for step, phase_of, parts in window:
        bad: dict[str, list[str]] = {}
        for k, v in parts.items():
            if not bool(torch.isfinite(v).all()):
                bad.setdefault(phase_of.get(k, "?"), []).append(k)
        if bad:
            return f"in step {step}, " + ", ".join(f"phase {ph} ({', '.join(ks)})" for ph, ks in bad.items())
    return "(phase unknown)"


def _truncate_metrics(path: Path, step: int) -> None:
    keep = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
    ckpt.atomic_write_text(path, "".join(x + "\n" for x in keep))
