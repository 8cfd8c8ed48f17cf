#include "reference/dense_reference.h"
