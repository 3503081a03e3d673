#include "worker/agent/gpu_discovery.h"

#include <dlfcn.h>

#include <cctype>
#include <fstream>

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
// nvmlPciInfo_t as NVML documents it.
struct NvmlPciInfo {
  char bus_id_legacy[16];
  unsigned int domain;
  unsigned int bus;
  unsigned int device;
  unsigned int pci_device_id;
  unsigned int pci_sub_system_id;
  char bus_id[32];
};

// The NUMA node of a PCI device ("00000000:3B:00.0"), from sysfs.
int NumaNodeOf(const std::string& nvml_bus_id) {
  // sysfs names devices with a 4-digit, lower-case domain: 0000:3b:00.0.
  std::string id = nvml_bus_id;
  if (id.size() > 12) id = id.substr(id.size() - 12);
  for (char& c : id) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  std::ifstream in("/sys/bus/pci/devices/" + id + "/numa_node");
  int node = -1;
  if (!(in >> node)) return -1;
  return node;
}

struct Nvml {
  void* library = nullptr;
  NvmlReturn (*init)() = nullptr;
  NvmlReturn (*shutdown)() = nullptr;
  NvmlReturn (*device_count)(unsigned int*) = nullptr;
  NvmlReturn (*device_by_index)(unsigned int, NvmlDevice*) = nullptr;
  NvmlReturn (*device_name)(NvmlDevice, char*, unsigned int) = nullptr;
  NvmlReturn (*device_uuid)(NvmlDevice, char*, unsigned int) = nullptr;
  NvmlReturn (*device_memory)(NvmlDevice, NvmlMemory*) = nullptr;
  NvmlReturn (*device_pci)(NvmlDevice, NvmlPciInfo*) = nullptr;

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
  Load(nvml.library, "nvmlDeviceGetPciInfo_v3", &nvml.device_pci);
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
    NvmlPciInfo pci{};
    gpu.set_domain(nvml.device_pci != nullptr && nvml.device_pci(device, &pci) == 0
                       ? NumaNodeOf(pci.bus_id)
                       : -1);
    gpus.push_back(std::move(gpu));
  }
  return gpus;
}

std::vector<v1::Gpu> PretendGpus(const std::string& node, int count,
                                 const std::vector<int>& domains) {
  std::vector<v1::Gpu> gpus;
  for (int i = 0; i < count; ++i) {
    v1::Gpu gpu;
    gpu.set_index(i);
    gpu.set_domain(i < static_cast<int>(domains.size()) ? domains[i] : -1);
    gpu.set_name("pretend");
    gpu.set_uuid(absl::StrCat("pretend-", node, "-", i));
    gpus.push_back(std::move(gpu));
  }
  return gpus;
}

}  // namespace dcvlr
