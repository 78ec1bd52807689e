// Dataset readers (IDX, CIFAR-10/100 binary, image folders), each returning an ImageSet.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "datasets/image_set.h"

namespace retort::data {

// Every reader throws std::runtime_error with a one-line message "<file>: <what is wrong>" for a
// missing or unreadable path, a truncated file, a wrong magic number, a count mismatch between
// images and labels, a label out of range, an empty class folder, a file that is not a decodable
// image, or an image whose size or channels differ from the others. Any file may be gzipped:
// compression is detected by content (1f 8b), not by name.

// IDX files (yann.lecun.com/exdb/mnist): images with magic 0x00000803 (uint8, 3 dims: N, H, W),
// labels with magic 0x00000801 (uint8, 1 dim: N), sizes big-endian. Gives (N, 1, H, W) images.
// num_classes = 0 takes max label + 1; otherwise labels must lie in [0, num_classes).
ImageSet read_idx(const std::string& images_path, const std::string& labels_path,
                  int64_t num_classes = 0, std::vector<std::string> class_names = {});

// CIFAR binary batches (cs.toronto.edu/~kriz/cifar.html): records of 32x32x3 images stored as
// 1024 red, 1024 green, 1024 blue bytes (already CHW). CIFAR-10 records are 1 label byte + 3072
// pixel bytes; CIFAR-100 records are coarse label, fine label, 3072 pixel bytes, and the set is
// labelled with the FINE label (100 classes). Several files are concatenated in the given order.
// Class names come from batches.meta.txt / fine_label_names.txt beside the first file when
// present (CIFAR-10's are built in).
enum class CifarVariant { cifar10, cifar100 };
ImageSet read_cifar(const std::vector<std::string>& paths, CifarVariant variant);
inline ImageSet read_cifar(const std::string& path, CifarVariant variant) {
  return read_cifar(std::vector<std::string>{path}, variant);
}

// One subfolder of `root` per class (class k = k-th name in byte order), each holding image files
// decoded by content with stb_image (PNG, JPEG, BMP, GIF, PGM/PPM, TGA, ...). Hidden entries
// (starting with '.') and plain files directly in root are skipped. channels = 0 keeps the files'
// own channel count, which must then be the same for all files; 1 (grayscale), 3 (RGB) or 4
// (RGBA) converts every file to that count. All images must have the same height and width.
ImageSet read_image_folder(const std::string& root, int channels = 0);

// The Fashion-MNIST files from Debian's dataset-fashion-mnist package (or the same names under
// `root`): {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz, 10 named classes.
inline constexpr const char* kFashionMnistRoot = "/usr/share/datasets/fashion-mnist";
ImageSet fashion_mnist(const std::string& root = kFashionMnistRoot, bool train = true);

// The official binary distributions' layouts: root/data_batch_{1..5}.bin or root/test_batch.bin
// (cifar-10-batches-bin), root/train.bin or root/test.bin (cifar-100-binary).
ImageSet cifar10(const std::string& root, bool train = true);
ImageSet cifar100(const std::string& root, bool train = true);

}  // namespace retort::data
