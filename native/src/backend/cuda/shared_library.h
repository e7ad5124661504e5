// Opening a CUDA library at run time (cuBLAS, cuBLASLt): the addon links neither, so a prebuilt
// binary loads on machines without them and says what to install only when a GPU model is made.
#pragma once

#include <dlfcn.h>

#include <initializer_list>
#include <string>

namespace perceiver::cuda {

// The first of `names` that dlopen loads (null entries and empty strings are skipped: an unset
// environment variable), its name in *path; null when none does, with every dlerror() in *tried.
inline void* OpenFirstLibrary(std::initializer_list<const char*> names, std::string* path, std::string* tried) {
  for (const char* name : names) {
    if (name == nullptr || *name == '\0') continue;
    if (void* handle = dlopen(name, RTLD_NOW | RTLD_LOCAL)) {
      *path = name;
      return handle;
    }
    *tried += std::string(tried->empty() ? "" : "; ") + dlerror();
  }
  return nullptr;
}

}  // namespace perceiver::cuda
