#include "worker/agent/gpu_discovery.h"

#include <dlfcn.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>

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

// NVML's "00000000:3B:00.0" as sysfs names the device: a 4-digit,
// lower-case domain, 0000:3b:00.0.
std::string SysfsBusId(const std::string& nvml_bus_id) {
  std::string id = nvml_bus_id;
  if (id.size() > 12) id = id.substr(id.size() - 12);
  for (char& c : id)
    c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  return id;
}

// The NUMA node of a PCI device ("00000000:3B:00.0"), from sysfs.
int NumaNodeOf(const std::string& nvml_bus_id) {
  std::ifstream in("/sys/bus/pci/devices/" + SysfsBusId(nvml_bus_id) +
                   "/numa_node");
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
  // nvmlEnableState_t is an enum: 1 = active.
  NvmlReturn (*nvlink_state)(NvmlDevice, unsigned int, int*) = nullptr;
  NvmlReturn (*nvlink_remote_pci)(NvmlDevice, unsigned int,
                                  NvmlPciInfo*) = nullptr;

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

// NVML_NVLINK_MAX_LINKS of current drivers (18 on H100); a device answers
// an error for links it does not have.
constexpr unsigned int kMaxNvLinks = 18;

// Union-find over GPUs and NVLink endpoints.
class Islands {
 public:
  int Add() {
    parent_.push_back(static_cast<int>(parent_.size()));
    return parent_.back();
  }
  int Find(int x) {
    while (parent_[x] != x) x = parent_[x] = parent_[parent_[x]];
    return x;
  }
  void Join(int a, int b) {
    a = Find(a);
    b = Find(b);
    if (a != b) parent_[std::max(a, b)] = std::min(a, b);
  }

 private:
  std::vector<int> parent_;
};

// nvmlUtilization_t.
struct NvmlUtilization {
  unsigned int gpu;
  unsigned int memory;
};
constexpr int kNvmlTemperatureGpu = 0;

}  // namespace

std::vector<int> LocalityDomains(const std::vector<GpuTopology>& gpus) {
  Islands islands;
  std::map<std::string, int> endpoint;  // by sysfs bus id
  auto node_of = [&](const std::string& bus_id) {
    auto [it, inserted] = endpoint.try_emplace(SysfsBusId(bus_id), -1);
    if (inserted) it->second = islands.Add();
    return it->second;
  };
  std::vector<int> gpu_node;
  for (const GpuTopology& gpu : gpus) {
    // A GPU without a bus id is an island of its own.
    gpu_node.push_back(gpu.bus_id.empty() ? islands.Add()
                                          : node_of(gpu.bus_id));
  }
  for (size_t i = 0; i < gpus.size(); ++i) {
    for (const std::string& remote : gpus[i].nvlink_remotes) {
      if (!remote.empty()) islands.Join(gpu_node[i], node_of(remote));
    }
  }
  std::map<int, int> members;  // GPUs per island root
  for (int node : gpu_node) ++members[islands.Find(node)];
  std::map<int, int> number;  // island root -> domain
  for (int node : gpu_node) {
    const int root = islands.Find(node);
    if (members[root] >= 2) number.try_emplace(root, number.size());
  }
  const int island_count = static_cast<int>(number.size());
  std::vector<int> domains;
  for (size_t i = 0; i < gpus.size(); ++i) {
    auto it = number.find(islands.Find(gpu_node[i]));
    if (it != number.end()) {
      domains.push_back(it->second);
    } else {
      domains.push_back(
          gpus[i].numa_node >= 0 ? island_count + gpus[i].numa_node : -1);
    }
  }
  return domains;
}

struct GpuSampler::Nvml : dcvlr::Nvml {
  NvmlReturn (*utilization)(NvmlDevice, NvmlUtilization*) = nullptr;
  NvmlReturn (*temperature)(NvmlDevice, int, unsigned int*) = nullptr;
  NvmlReturn (*power)(NvmlDevice, unsigned int*) = nullptr;  // milliwatts
};

GpuSampler::GpuSampler(std::unique_ptr<Nvml> nvml) : nvml_(std::move(nvml)) {}
GpuSampler::~GpuSampler() = default;

absl::StatusOr<std::unique_ptr<GpuSampler>> GpuSampler::Open() {
  auto nvml = std::make_unique<Nvml>();
  nvml->library = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (nvml->library == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("NVML not available (", dlerror(), ")"));
  }
  if (!Load(nvml->library, "nvmlInit_v2", &nvml->init) ||
      !Load(nvml->library, "nvmlDeviceGetCount_v2", &nvml->device_count) ||
      !Load(nvml->library, "nvmlDeviceGetHandleByIndex_v2",
            &nvml->device_by_index) ||
      !Load(nvml->library, "nvmlDeviceGetUUID", &nvml->device_uuid)) {
    return absl::NotFoundError("NVML lacks a function dcvlr needs");
  }
  if (NvmlReturn rc = nvml->init(); rc != 0) {
    return absl::UnavailableError(absl::StrCat("nvmlInit failed: ", rc));
  }
  Load(nvml->library, "nvmlShutdown", &nvml->shutdown);
  Load(nvml->library, "nvmlDeviceGetMemoryInfo", &nvml->device_memory);
  Load(nvml->library, "nvmlDeviceGetUtilizationRates", &nvml->utilization);
  Load(nvml->library, "nvmlDeviceGetTemperature", &nvml->temperature);
  Load(nvml->library, "nvmlDeviceGetPowerUsage", &nvml->power);
  return std::unique_ptr<GpuSampler>(new GpuSampler(std::move(nvml)));
}

std::vector<GpuSample> GpuSampler::Sample() const {
  std::vector<GpuSample> out;
  unsigned int count = 0;
  if (nvml_->device_count(&count) != 0) return out;
  for (unsigned int i = 0; i < count; ++i) {
    NvmlDevice device = nullptr;
    if (nvml_->device_by_index(i, &device) != 0) continue;
    GpuSample sample;
    sample.index = static_cast<int>(i);
    char text[96] = {};
    if (nvml_->device_uuid(device, text, sizeof(text)) == 0) sample.uuid = text;
    NvmlUtilization utilization{};
    if (nvml_->utilization != nullptr &&
        nvml_->utilization(device, &utilization) == 0) {
      sample.utilization = utilization.gpu / 100.0;
    }
    NvmlMemory memory{};
    if (nvml_->device_memory != nullptr &&
        nvml_->device_memory(device, &memory) == 0) {
      sample.memory_used_bytes = static_cast<double>(memory.used);
      sample.memory_total_bytes = static_cast<double>(memory.total);
    }
    unsigned int value = 0;
    if (nvml_->temperature != nullptr &&
        nvml_->temperature(device, kNvmlTemperatureGpu, &value) == 0) {
      sample.temperature_celsius = value;
    }
    if (nvml_->power != nullptr && nvml_->power(device, &value) == 0) {
      sample.power_watts = value / 1000.0;
    }
    out.push_back(std::move(sample));
  }
  return out;
}

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
  Load(nvml.library, "nvmlDeviceGetNvLinkState", &nvml.nvlink_state);
  Load(nvml.library, "nvmlDeviceGetNvLinkRemotePciInfo_v2",
       &nvml.nvlink_remote_pci);
  unsigned int count = 0;
  if (NvmlReturn rc = nvml.device_count(&count); rc != 0) {
    return absl::UnavailableError(absl::StrCat("nvmlDeviceGetCount: ", rc));
  }
  std::vector<v1::Gpu> gpus;
  std::vector<GpuTopology> topology;
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
    GpuTopology where;
    NvmlPciInfo pci{};
    if (nvml.device_pci != nullptr && nvml.device_pci(device, &pci) == 0) {
      where.bus_id = pci.bus_id;
      where.numa_node = NumaNodeOf(pci.bus_id);
    }
    for (unsigned int link = 0;
         nvml.nvlink_state != nullptr && nvml.nvlink_remote_pci != nullptr &&
         link < kMaxNvLinks;
         ++link) {
      int active = 0;
      NvmlPciInfo remote{};
      if (nvml.nvlink_state(device, link, &active) == 0 && active == 1 &&
          nvml.nvlink_remote_pci(device, link, &remote) == 0) {
        where.nvlink_remotes.push_back(remote.bus_id);
      }
    }
    topology.push_back(std::move(where));
    gpus.push_back(std::move(gpu));
  }
  const std::vector<int> domains = LocalityDomains(topology);
  for (size_t i = 0; i < gpus.size(); ++i) gpus[i].set_domain(domains[i]);
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
