#pragma once
#include "attnkit/dense.h"
