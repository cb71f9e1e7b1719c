#!/bin/sh
# make demo: the main job on the embedded default data, from a fresh clone.
# Today this is the data half of the pipeline (synthetic CT dataset,
# preprocessing plan and cache, NIfTI and DICOM in and out, metrics); training
# and prediction join it when the end-to-end issue lands. Everything goes under out/demo/.
set -eu
MP=${1:-build/medpipe}
OUT=out/demo
rm -rf "$OUT"
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*"; }

step "this machine"
"$MP" doctor | sed -n '/^medpipe will use/,$p'

step "synthetic CT dataset: 20 training + 5 test cases (seed 42)"
"$MP" synth --out "$OUT/data" --cases 20 --test-cases 5 --seed 42
ls "$OUT/data"

step "preprocess: dataset check, fingerprint, plan and cache"
"$MP" preprocess "$OUT/data" --out "$OUT/cache"

step "one case"
"$MP" info "$OUT/data/imagesTs/case_020_0000.nii.gz"

step "NIfTI -> DICOM CT series -> NIfTI (image and label map)"
"$MP" convert "$OUT/data/imagesTs/case_020_0000.nii.gz" "$OUT/dicom/case_020" --to-dicom --modality CT \
  --patient-id DEMO020 --series-description "synthetic CT"
"$MP" convert "$OUT/dicom/case_020" "$OUT/roundtrip/case_020_0000.nii.gz"
"$MP" info "$OUT/dicom/case_020" | head -n 12
mkdir -p "$OUT/labels_dicom" "$OUT/labels_back"
for c in 020 021 022 023 024; do
  "$MP" convert "$OUT/data/labelsTs/case_$c.nii.gz" "$OUT/labels_dicom/case_$c" --to-dicom --modality CT
  "$MP" convert "$OUT/labels_dicom/case_$c" "$OUT/labels_back/case_$c.nii.gz"
done

step "evaluate: label maps after the DICOM round trip vs the originals (must be exact: Dice 1, HD95 0)"
"$MP" evaluate --pred "$OUT/labels_back" --ref "$OUT/data/labelsTs" --json "$OUT/summary.json"
echo
echo "summary: $OUT/summary.json"
