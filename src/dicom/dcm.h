/*
 * dcm.h - the telerad DICOM library, one umbrella header.
 *
 * Layer 1 of telerad (see DESIGN.md): the data dictionary, the data set model, Part 10 reading
 * and writing, character sets and the DICOM JSON model. It knows nothing of networks or
 * services. Exported names start with dcm_ / DCM_.
 */
#ifndef DCM_H
#define DCM_H

#include "vr.h"
#include "dict.h"
#include "uid.h"
#include "charset.h"
#include "dataset.h"
#include "part10.h"
#include "json.h"
#include "dump.h"

#endif
