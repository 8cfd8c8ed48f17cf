# CuTe/CUTLASS C++ headers from the PyPI package nvidia-cutlass (pinned), unpacked into the build tree.
# The wheel ships the headers under cutlass_library/source/include. Nothing is vendored in the repo.
set(ATTNKIT_CUTLASS_DIR "${CMAKE_BINARY_DIR}/_deps/cutlass-${ATTNKIT_CUTLASS_VERSION}")
set(ATTNKIT_CUTLASS_INCLUDE "${ATTNKIT_CUTLASS_DIR}/include")
if(NOT EXISTS "${ATTNKIT_CUTLASS_INCLUDE}/cute/tensor.hpp")
  find_package(Python3 REQUIRED COMPONENTS Interpreter)
  message(STATUS "Fetching nvidia-cutlass==${ATTNKIT_CUTLASS_VERSION} from PyPI for the CuTe headers")
  execute_process(
    COMMAND "${Python3_EXECUTABLE}" -m pip download --quiet --no-deps --only-binary=:all:
            "nvidia-cutlass==${ATTNKIT_CUTLASS_VERSION}" -d "${ATTNKIT_CUTLASS_DIR}/wheel"
    RESULT_VARIABLE pip_result)
  if(NOT pip_result EQUAL 0)
    message(FATAL_ERROR "pip could not download nvidia-cutlass==${ATTNKIT_CUTLASS_VERSION}; "
                        "configure with -DATTNKIT_ENABLE_CUDA=OFF to build the CPU backend only")
  endif()
  file(GLOB cutlass_wheel "${ATTNKIT_CUTLASS_DIR}/wheel/nvidia_cutlass-*.whl")
  execute_process(
    COMMAND "${Python3_EXECUTABLE}" "${CMAKE_CURRENT_LIST_DIR}/unpack_cutlass_headers.py"
            "${cutlass_wheel}" "${ATTNKIT_CUTLASS_INCLUDE}"
    RESULT_VARIABLE unpack_result)
  if(NOT unpack_result EQUAL 0)
    message(FATAL_ERROR "could not unpack the CuTe headers from ${cutlass_wheel}")
  endif()
endif()
add_library(attnkit_cutlass INTERFACE)
target_include_directories(attnkit_cutlass SYSTEM INTERFACE "${ATTNKIT_CUTLASS_INCLUDE}")
