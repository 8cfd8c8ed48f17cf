// attnkit: one header for the whole public C++ API.
#pragma once

#include "attnkit/dense.h"
#include "attnkit/linear.h"
#include "attnkit/numeric.h"
#include "attnkit/types.h"
#include "attnkit/version.h"
