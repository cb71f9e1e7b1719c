#!/bin/sh
# make demo: the main job on the embedded default data, from a fresh clone:
# a synthetic CT dataset, preprocessing, a few minutes of training of a small
# U-Net on the CPU, prediction of the held-out test cases, evaluation
# (out/demo/summary.json), plus NIfTI <-> DICOM round trips and a DICOM SEG.
# Everything goes under out/demo/.
set -eu
MP=${1:-build/medpipe}
OUT=out/demo
EPOCHS=${DEMO_EPOCHS:-6}
ITERS=${DEMO_ITERS:-50}
# oneDNN's OpenMP threads spin between layers by default; on a shared 2-core
# machine that steals time from the loader thread.
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
export OMP_WAIT_POLICY
rm -rf "$OUT"
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*"; }
T0=$(date +%s)

step "this machine"
"$MP" doctor | sed -n '/^medpipe will use/,$p'

step "synthetic CT dataset: 40 training + 10 test cases, 3 organ classes (seed 42)"
"$MP" synth --out "$OUT/data" --cases 40 --test-cases 10 --seed 42

step "preprocess: dataset check, fingerprint, plan (3 mm grid, small U-Net) and cache"
"$MP" preprocess "$OUT/data" --out "$OUT/cache" --target-spacing 3,3,3 --features 16,128 --memory-budget-gb 0.5

step "train: $EPOCHS epochs x $ITERS steps, AdamW, 4 held-out validation cases"
T1=$(date +%s)
"$MP" train "$OUT/cache" --out "$OUT/run" --optimizer adamw --lr 3e-3 --epochs "$EPOCHS" --iters-per-epoch "$ITERS" \
  --val-cases 4 --no-augment
T2=$(date +%s)

step "predict the 10 test cases (sliding window, Gaussian weighting, back to each input's geometry)"
"$MP" predict --model "$OUT/run" --in "$OUT/data/imagesTs" --out "$OUT/pred"

step "evaluate the predictions against the test labels"
"$MP" evaluate --pred "$OUT/pred" --ref "$OUT/data/labelsTs" --json "$OUT/summary.json" |
  sed -n '1p;/^mean/p;/^foreground/p'

step "DICOM: a test case as a CT series, predicted from DICOM, with a DICOM SEG"
"$MP" convert "$OUT/data/imagesTs/case_040_0000.nii.gz" "$OUT/dicom/case_040" --to-dicom --modality CT \
  --patient-id DEMO040 --series-description "synthetic CT"
"$MP" predict --model "$OUT/run" --in "$OUT/dicom/case_040" --out "$OUT/pred_dicom" --dicom-seg --quiet
ls -l "$OUT/pred_dicom"

step "NIfTI -> DICOM -> NIfTI label maps must come back exact"
mkdir -p "$OUT/labels_dicom" "$OUT/labels_back"
for c in 040 041; do
  "$MP" convert "$OUT/data/labelsTs/case_$c.nii.gz" "$OUT/labels_dicom/case_$c" --to-dicom --modality CT
  "$MP" convert "$OUT/labels_dicom/case_$c" "$OUT/labels_back/case_$c.nii.gz"
  "$MP" evaluate --pred "$OUT/labels_back/case_$c.nii.gz" --ref "$OUT/data/labelsTs/case_$c.nii.gz" | tail -n 1
done

T3=$(date +%s)
echo
echo "training took $((T2 - T1)) s; the whole demo $((T3 - T0)) s"
echo "summary: $OUT/summary.json   model: $OUT/run   predictions: $OUT/pred"
