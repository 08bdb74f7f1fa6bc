// common/status.h: Status and StatusOr live in the public header, because
// ops return them (see include/sluice/status.h).
#ifndef SLUICE_COMMON_STATUS_H_
#define SLUICE_COMMON_STATUS_H_

#include "sluice/status.h"

#endif  // SLUICE_COMMON_STATUS_H_
