#include "worker/agent/gpu_discovery.h"

#include <dlfcn.h>

#include "absl/strings/str_cat.h"

namespace dcvlr {
namespace {

// The few NVML entry points we use, declared from NVML's documented ABI so
// that no NVML header is needed to build.
using NvmlReturn = int;  // 0 = NVML_SUCCESS
using NvmlDevice = void*;
struct NvmlMemory {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};

struct Nvml {
  void* library = nullptr;
  NvmlReturn (*init)() = nullptr;
  NvmlReturn (*shutdown)() = nullptr;
  NvmlReturn (*device_count)(unsigned int*) = nullptr;
  NvmlReturn (*device_by_index)(unsigned int, NvmlDevice*) = nullptr;
  NvmlReturn (*device_name)(NvmlDevice, char*, unsigned int) = nullptr;
  NvmlReturn (*device_uuid)(NvmlDevice, char*, unsigned int) = nullptr;
  NvmlReturn (*device_memory)(NvmlDevice, NvmlMemory*) = nullptr;

  ~Nvml() {
    if (shutdown != nullptr) shutdown();
    if (library != nullptr) dlclose(library);
  }
};

template <typename F>
bool Load(void* library, const char* name, F* out) {
  *out = reinterpret_cast<F>(dlsym(library, name));
  return *out != nullptr;
}

}  // namespace

absl::StatusOr<std::vector<v1::Gpu>> DiscoverGpus() {
  Nvml nvml;
  nvml.library = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (nvml.library == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("NVML not available (", dlerror(), ")"));
  }
  if (!Load(nvml.library, "nvmlInit_v2", &nvml.init) ||
      !Load(nvml.library, "nvmlDeviceGetCount_v2", &nvml.device_count) ||
      !Load(nvml.library, "nvmlDeviceGetHandleByIndex_v2",
            &nvml.device_by_index) ||
      !Load(nvml.library, "nvmlDeviceGetName", &nvml.device_name) ||
      !Load(nvml.library, "nvmlDeviceGetUUID", &nvml.device_uuid) ||
      !Load(nvml.library, "nvmlDeviceGetMemoryInfo", &nvml.device_memory)) {
    return absl::NotFoundError("NVML lacks a function dcvlr needs");
  }
  if (NvmlReturn rc = nvml.init(); rc != 0) {
    return absl::UnavailableError(absl::StrCat("nvmlInit failed: ", rc));
  }
  Load(nvml.library, "nvmlShutdown", &nvml.shutdown);
  unsigned int count = 0;
  if (NvmlReturn rc = nvml.device_count(&count); rc != 0) {
    return absl::UnavailableError(absl::StrCat("nvmlDeviceGetCount: ", rc));
  }
  std::vector<v1::Gpu> gpus;
  for (unsigned int i = 0; i < count; ++i) {
    NvmlDevice device = nullptr;
    if (nvml.device_by_index(i, &device) != 0) continue;
    v1::Gpu gpu;
    gpu.set_index(static_cast<int>(i));
    char text[96] = {};
    if (nvml.device_name(device, text, sizeof(text)) == 0) gpu.set_name(text);
    if (nvml.device_uuid(device, text, sizeof(text)) == 0) gpu.set_uuid(text);
    NvmlMemory memory{};
    if (nvml.device_memory(device, &memory) == 0) {
      gpu.set_memory_bytes(static_cast<int64_t>(memory.total));
    }
    gpus.push_back(std::move(gpu));
  }
  return gpus;
}

std::vector<v1::Gpu> PretendGpus(const std::string& node, int count) {
  std::vector<v1::Gpu> gpus;
  for (int i = 0; i < count; ++i) {
    v1::Gpu gpu;
    gpu.set_index(i);
    gpu.set_name("pretend");
    gpu.set_uuid(absl::StrCat("pretend-", node, "-", i));
    gpus.push_back(std::move(gpu));
  }
  return gpus;
}

}  // namespace dcvlr
