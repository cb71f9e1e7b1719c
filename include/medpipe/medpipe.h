/* medpipe: umbrella header of the public API. */
#ifndef MEDPIPE_H
#define MEDPIPE_H

#define MP_VERSION "0.1.0"

#include "medpipe/core.h"
#include "medpipe/vol.h"
#include "medpipe/vol_ops.h"
#include "medpipe/infer.h"
#include "medpipe/io.h"
#include "medpipe/dicom.h"
#include "medpipe/dicom_write.h"
#include "medpipe/dicom_source.h"
#include "medpipe/jsonl.h"
#include "medpipe/metrics.h"
#include "medpipe/nifti.h"
#include "medpipe/vol_morph.h"
#include "medpipe/sysinfo.h"
#include "medpipe/dataset.h"
#include "medpipe/synth.h"
#include "medpipe/preprocess.h"
#include "medpipe/nn.h"
#include "medpipe/dist.h"
#include "medpipe/loader.h"
#include "medpipe/model.h"
#include "medpipe/train.h"

#endif
