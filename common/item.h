// common/item.h: Item is part of the op API, so it lives in the public
// header include/sluice/item.h.
#ifndef SLUICE_COMMON_ITEM_H_
#define SLUICE_COMMON_ITEM_H_

#include "sluice/item.h"

#endif  // SLUICE_COMMON_ITEM_H_
