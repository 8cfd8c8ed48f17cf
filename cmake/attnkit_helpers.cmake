# attnkit_cuda_sources(<target> ARCH <90a|80> SOURCES ...): compile device sources for one arch only,
# in the -gencode form (sm_90a features need the arch-specific target).
function(attnkit_cuda_sources target)
  cmake_parse_arguments(ARG "" "ARCH" "SOURCES" ${ARGN})
  target_sources(${target} PRIVATE ${ARG_SOURCES})
  set(gencode "-gencode=arch=compute_${ARG_ARCH},code=sm_${ARG_ARCH}")
  # An sm_80 cubin does not load on sm_90 (H100: "no kernel image is available for execution on the
  # device"), so a build for Hopper also compiles the portable sm_80 code to native sm_90 SASS from the
  # same compute_80 PTX (mma.sync, ldmatrix, cp.async: no Hopper-only instruction).
  if(ARG_ARCH STREQUAL "80" AND ATTNKIT_ARCH_90A)
    list(APPEND gencode "-gencode=arch=compute_80,code=sm_90")
  endif()
  set_source_files_properties(${ARG_SOURCES} TARGET_DIRECTORY ${target} PROPERTIES COMPILE_OPTIONS "${gencode}")
endfunction()

# Warnings for our own C++ (not for the CuTe headers, which are SYSTEM includes).
function(attnkit_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -Xcompiler=-Wall>)
endfunction()
