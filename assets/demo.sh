#!/usr/bin/env bash
# `make demo`: the main job on a built-in default, start to finish on a CPU.
# synthetic data -> FineGAN training -> grids + layer sheet -> clusters -> metrics -> GIF.
# Everything lands in the folder given as $1 (default runs/demo).
set -euo pipefail
OUT=${1:-runs/demo}
FG=${FGTOOL:-.venv/bin/fgtool}
STEPS=${DEMO_STEPS:-1000}
mkdir -p "$OUT"
echo "== 1/6 synthetic data (2,000 images, 4 shapes x 3 appearances, 3 backgrounds)" >&2
[ -f "$OUT/data/meta.json" ] || $FG data synth --out "$OUT/data" --n 2000 --size 64 --seed 0 --quiet --json > "$OUT/synth.json"
echo "== 2/6 train FineGAN for $STEPS steps (32 px, bf16; progress below)" >&2
if [ -f "$OUT/run/last.pt" ]; then
  $FG train --resume --out "$OUT/run" --set train.steps=$STEPS --json > "$OUT/train.json"
else
  $FG train --model finegan --data "$OUT/data" --recipe recipes/synth-finegan.toml --out "$OUT/run" \
    --set train.steps=$STEPS --set train.sample_every=250 --set train.ckpt_every=250 --set model.bg_warmup=500 --json > "$OUT/train.json"
fi
echo "== 3/6 sample grids: samples, per-stage layers, hierarchy" >&2
$FG sample --ckpt "$OUT/run/last.pt" --out "$OUT/samples.png" --json > "$OUT/sample.json"
echo "== 4/6 cluster the real (synthetic) photos with phi_p + phi_c features" >&2
$FG cluster --ckpt "$OUT/run/last.pt" --data "$OUT/data" --out "$OUT/clusters.json" --quiet --json > "$OUT/cluster.json"
echo "== 5/6 metrics: child-label NMI/ACC, parent-feature NMI, and the pixel k-means floor" >&2
{
  echo "{"
  echo "\"child_all_features\": $($FG eval --metric nmi,acc,ari --pred "$OUT/clusters.json" --data "$OUT/data" --json),"
  echo "\"parent_phi_p_features\": $($FG eval --metric nmi,acc --ckpt "$OUT/run/last.pt" --data "$OUT/data" --features parent --label parent --k 4 --quiet --json),"
  echo "\"floor_pixels_child\": $($FG eval --metric nmi,acc --baseline pixels --data "$OUT/data" --quiet --json)"
  echo "}"
} > "$OUT/metrics.json"
echo "== 6/6 GIFs: a walk through z (pose) and through the child code" >&2
$FG gif --ckpt "$OUT/run/last.pt" --walk z --frames 24 --out "$OUT/walk_z.gif" --json > /dev/null
$FG gif --ckpt "$OUT/run/last.pt" --walk c --out "$OUT/walk_c.gif" --json > /dev/null
cp "$OUT/run/loss_curve.png" "$OUT/loss_curve.png"
python3 - "$OUT/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
for k, v in m.items():
    s = v["metrics"]
    print(f"{k:24s} NMI {s['nmi']:.3f}  ACC {s.get('acc', float('nan')):.3f}  (label: {s['label']})")
PY
echo "done: $OUT (samples.png, layers.png, fix_*.png, clusters.json, clusters.png, metrics.json, loss_curve.png, walk_*.gif)" >&2
