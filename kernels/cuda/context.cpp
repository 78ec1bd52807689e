// CudaContextOwner, the simple cudaMalloc workspace, device detection and the ConvAlgoCache map.
#include "kernels/cuda/context.h"

#include <functional>
#include <utility>

#include "kernels/cuda/check.h"
#include "kernels/cuda/conv_algo_cache.h"

namespace retort::kernels {

bool cuda_device_available(std::string* reason) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    // The error is not sticky; clear it so a later cudaGetLastError does not report it again.
    (void)cudaGetLastError();
    if (reason != nullptr) {
      *reason = std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
    }
    return false;
  }
  if (count == 0) {
    if (reason != nullptr) *reason = "the CUDA runtime reports 0 devices";
    return false;
  }
  if (reason != nullptr) reason->clear();
  return true;
}

void* SimpleCudaWorkspace::get(size_t bytes) {
  if (bytes == 0) return buffer_.data();
  if (bytes > buffer_.bytes()) {
    RETORT_CUDA_CHECK(cudaStreamSynchronize(stream_));
    buffer_ = DeviceBuffer();  // free first so the old and new buffers never coexist
    // Round up to 1 MiB so a sequence of slightly growing requests does not reallocate each time.
    const size_t granule = size_t{1} << 20;
    buffer_ = DeviceBuffer((bytes + granule - 1) / granule * granule);
  }
  return buffer_.data();
}

CudaContextOwner::CudaContextOwner()
    : workspace_(std::make_unique<SimpleCudaWorkspace>(stream_.get())),
      conv_algos_(std::make_unique<ConvAlgoCache>()) {
  RETORT_CUBLAS_CHECK(cublasSetStream(cublas_.get(), stream_.get()));
  RETORT_CUBLAS_CHECK(cublasSetPointerMode(cublas_.get(), CUBLAS_POINTER_MODE_HOST));
  RETORT_CUBLAS_CHECK(cublasSetMathMode(cublas_.get(), CUBLAS_DEFAULT_MATH));
  RETORT_CUDNN_CHECK(cudnnSetStream(cudnn_.get(), stream_.get()));
  context_.stream = stream_.get();
  context_.cublas = cublas_.get();
  context_.cudnn = cudnn_.get();
  context_.workspace = workspace_.get();
  context_.conv_algos = conv_algos_.get();
}

// Members are destroyed in reverse order: cache (descriptors), workspace, handles, then stream.
CudaContextOwner::~CudaContextOwner() = default;

CudaContextOwner::CudaContextOwner(CudaContextOwner&& other) noexcept
    : stream_(std::move(other.stream_)),
      cublas_(std::move(other.cublas_)),
      cudnn_(std::move(other.cudnn_)),
      workspace_(std::move(other.workspace_)),
      conv_algos_(std::move(other.conv_algos_)),
      context_(std::exchange(other.context_, CudaContext{})) {}

CudaContextOwner& CudaContextOwner::operator=(CudaContextOwner&& other) noexcept {
  if (this == &other) return *this;
  // Release the old resources users-first, as the destructor does.
  conv_algos_ = std::move(other.conv_algos_);
  workspace_ = std::move(other.workspace_);
  cudnn_ = std::move(other.cudnn_);
  cublas_ = std::move(other.cublas_);
  stream_ = std::move(other.stream_);
  context_ = std::exchange(other.context_, CudaContext{});
  return *this;
}

bool ConvAlgoKey::operator==(const ConvAlgoKey& other) const {
  const Conv2dShape& a = shape;
  const Conv2dShape& b = other.shape;
  return a.batch == b.batch && a.in_channels == b.in_channels && a.in_h == b.in_h &&
         a.in_w == b.in_w && a.out_channels == b.out_channels && a.kernel_h == b.kernel_h &&
         a.kernel_w == b.kernel_w && a.stride_h == b.stride_h && a.stride_w == b.stride_w &&
         a.pad_h == b.pad_h && a.pad_w == b.pad_w && a.groups == b.groups &&
         direction == other.direction && allow_tf32 == other.allow_tf32 &&
         deterministic == other.deterministic && workspace_limit == other.workspace_limit;
}

size_t ConvAlgoKeyHash::operator()(const ConvAlgoKey& key) const {
  const Conv2dShape& s = key.shape;
  size_t h = 0;
  auto mix = [&h](uint64_t v) {
    h ^= std::hash<uint64_t>{}(v) + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
  };
  for (int64_t v : {s.batch, s.in_channels, s.in_h, s.in_w, s.out_channels, s.kernel_h, s.kernel_w,
                    s.stride_h, s.stride_w, s.pad_h, s.pad_w, s.groups}) {
    mix(static_cast<uint64_t>(v));
  }
  mix(static_cast<uint64_t>(key.direction));
  mix((key.allow_tf32 ? 1u : 0u) | (key.deterministic ? 2u : 0u));
  mix(key.workspace_limit);
  return h;
}

const ConvPlan* ConvAlgoCache::find(const ConvAlgoKey& key) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = plans_.find(key);
  return it == plans_.end() ? nullptr : it->second.get();
}

const ConvPlan& ConvAlgoCache::insert(const ConvAlgoKey& key, std::unique_ptr<ConvPlan> plan) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto [it, inserted] = plans_.emplace(key, std::move(plan));
  return *it->second;
}

size_t ConvAlgoCache::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return plans_.size();
}

void ConvAlgoCache::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  plans_.clear();
}

}  // namespace retort::kernels
