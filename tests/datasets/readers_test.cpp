// Tests of the IDX, CIFAR and image-folder readers on small generated files, sound and damaged.
#include "datasets/readers.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tests/datasets/dataset_test_util.h"

namespace retort::data {
namespace {

using test::idx_bytes;
using test::TempDir;
using test::throws_file_error;
using test::write_bytes;
using test::write_gzip;
using test::write_png;

constexpr uint32_t kImagesMagic = 0x00000803, kLabelsMagic = 0x00000801;

// ---- IDX ----------------------------------------------------------------------------------------

// 5 images of 3 x 4 whose pixel (i, y, x) is 40 i + 4 y + x; labels 0, 3, 1, 3, 2.
struct IdxFixture {
  std::vector<uint8_t> pixels, labels = {0, 3, 1, 3, 2};
  IdxFixture() {
    for (int i = 0; i < 5; ++i)
      for (int y = 0; y < 3; ++y)
        for (int x = 0; x < 4; ++x) pixels.push_back(static_cast<uint8_t>(40 * i + 4 * y + x));
  }
  std::vector<uint8_t> images_file() const { return idx_bytes(kImagesMagic, {5, 3, 4}, pixels); }
  std::vector<uint8_t> labels_file() const { return idx_bytes(kLabelsMagic, {5}, labels); }
};

void expect_idx_fixture(const ImageSet& set) {
  const IdxFixture f;
  ASSERT_EQ(set.size(), 5);
  EXPECT_EQ(set.channels(), 1);
  EXPECT_EQ(set.height(), 3);
  EXPECT_EQ(set.width(), 4);
  EXPECT_EQ(set.pixels(), f.pixels);
  EXPECT_EQ(set.labels(), (std::vector<int64_t>{0, 3, 1, 3, 2}));
  EXPECT_EQ(set.image(2)[5], 40 * 2 + 4 + 1);
  EXPECT_EQ(set.sample(3).label, 3);
  EXPECT_EQ(set.sample(3).index, 3);
}

TEST(ReadIdx, PlainFiles) {
  TempDir dir("idx");
  const IdxFixture f;
  write_bytes(dir.file("images-idx3-ubyte"), f.images_file());
  write_bytes(dir.file("labels-idx1-ubyte"), f.labels_file());
  const ImageSet set = read_idx(dir.file("images-idx3-ubyte"), dir.file("labels-idx1-ubyte"));
  expect_idx_fixture(set);
  EXPECT_EQ(set.num_classes(), 4);  // max label + 1
  EXPECT_EQ(set.class_counts(), (std::vector<int64_t>{1, 1, 1, 2}));
}

TEST(ReadIdx, GzipDetectedByContentNotName) {
  TempDir dir("idxgz");
  const IdxFixture f;
  write_gzip(dir.file("images.gz"), f.images_file());
  write_gzip(dir.file("labels-no-suffix"), f.labels_file());  // gzip without a .gz name
  const ImageSet set = read_idx(dir.file("images.gz"), dir.file("labels-no-suffix"), 10);
  expect_idx_fixture(set);
  EXPECT_EQ(set.num_classes(), 10);
}

TEST(ReadIdx, ClassNamesMustMatchTheClassCount) {
  TempDir dir("idxnames");
  const IdxFixture f;
  write_bytes(dir.file("i"), f.images_file());
  write_bytes(dir.file("l"), f.labels_file());
  const ImageSet set = read_idx(dir.file("i"), dir.file("l"), 4, {"a", "b", "c", "d"});
  EXPECT_EQ(set.class_names()[3], "d");
  EXPECT_TRUE(throws_file_error([&] { read_idx(dir.file("i"), dir.file("l"), 4, {"a"}); },
                                dir.file("l"), "class names"));
}

TEST(ReadIdx, TruncatedImagesFile) {
  TempDir dir("idxtrunc");
  const IdxFixture f;
  auto images = f.images_file();
  images.resize(images.size() - 7);
  write_bytes(dir.file("images"), images);
  write_bytes(dir.file("labels"), f.labels_file());
  EXPECT_TRUE(throws_file_error([&] { read_idx(dir.file("images"), dir.file("labels")); },
                                dir.file("images"), "truncated"));
  write_bytes(dir.file("short"), {0, 0, 8});
  EXPECT_TRUE(throws_file_error([&] { read_idx(dir.file("short"), dir.file("labels")); },
                                dir.file("short"), "truncated"));
  write_bytes(dir.file("header-only"), idx_bytes(kImagesMagic, {5, 3}, {}));
  EXPECT_TRUE(throws_file_error([&] { read_idx(dir.file("header-only"), dir.file("labels")); },
                                dir.file("header-only"), "truncated"));
}

TEST(ReadIdx, TruncatedGzipStream) {
  TempDir dir("idxgztrunc");
  const IdxFixture f;
  write_gzip(dir.file("images.gz"), f.images_file());
  auto bytes = test::read_bytes(dir.file("images.gz"));
  bytes.resize(bytes.size() / 2);
  write_bytes(dir.file("images.gz"), bytes);
  write_bytes(dir.file("labels"), f.labels_file());
  EXPECT_TRUE(throws_file_error([&] { read_idx(dir.file("images.gz"), dir.file("labels")); },
                                dir.file("images.gz"), "truncated gzip"));
}

TEST(ReadIdx, TrailingBytesAreAnError) {
  TempDir dir("idxlong");
  const IdxFixture f;
  auto labels = f.labels_file();
  labels.push_back(1);
  write_bytes(dir.file("images"), f.images_file());
  write_bytes(dir.file("labels"), labels);
  EXPECT_TRUE(throws_file_error([&] { read_idx(dir.file("images"), dir.file("labels")); },
                                dir.file("labels"), "size mismatch"));
}

TEST(ReadIdx, WrongMagic) {
  TempDir dir("idxmagic");
  const IdxFixture f;
  write_bytes(dir.file("images"), f.images_file());
  write_bytes(dir.file("labels"), f.labels_file());
  // Files passed the wrong way round.
  EXPECT_TRUE(throws_file_error([&] { read_idx(dir.file("labels"), dir.file("images")); },
                                dir.file("labels"), "wrong magic 0x00000801"));
  write_bytes(dir.file("png"), {0x89, 'P', 'N', 'G', 0, 0, 0, 0});
  EXPECT_TRUE(throws_file_error([&] { read_idx(dir.file("png"), dir.file("labels")); },
                                dir.file("png"), "not an IDX file"));
}

TEST(ReadIdx, CountMismatch) {
  TempDir dir("idxcount");
  const IdxFixture f;
  write_bytes(dir.file("images"), f.images_file());
  write_bytes(dir.file("labels"), idx_bytes(kLabelsMagic, {4}, {0, 1, 2, 3}));
  EXPECT_TRUE(throws_file_error([&] { read_idx(dir.file("images"), dir.file("labels")); },
                                dir.file("labels"), "count mismatch: 4 labels for the 5 images"));
}

TEST(ReadIdx, LabelOutOfRange) {
  TempDir dir("idxlabel");
  const IdxFixture f;
  write_bytes(dir.file("images"), f.images_file());
  write_bytes(dir.file("labels"), f.labels_file());
  EXPECT_TRUE(throws_file_error([&] { read_idx(dir.file("images"), dir.file("labels"), 3); },
                                dir.file("labels"), "label 3 of image 1 is outside [0, 3)"));
}

TEST(ReadIdx, MissingFileOrFolder) {
  TempDir dir("idxmissing");
  const IdxFixture f;
  write_bytes(dir.file("labels"), f.labels_file());
  EXPECT_TRUE(throws_file_error([&] { read_idx(dir.file("nope"), dir.file("labels")); },
                                dir.file("nope"), "no such file"));
  EXPECT_TRUE(throws_file_error([&] { read_idx(dir.str(), dir.file("labels")); }, dir.str(),
                                "is a directory"));
}

// ---- CIFAR --------------------------------------------------------------------------------------

// A record: label byte(s) then 3072 pixel bytes with pixel (c, y, x) = (seed + c * 7 + y + x).
std::vector<uint8_t> cifar_record(std::vector<uint8_t> label_bytes, int seed) {
  std::vector<uint8_t> rec = std::move(label_bytes);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x) rec.push_back(static_cast<uint8_t>(seed + c * 7 + y + x));
  return rec;
}

std::vector<uint8_t> concat(const std::vector<std::vector<uint8_t>>& parts) {
  std::vector<uint8_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

TEST(ReadCifar, Cifar10SeveralFiles) {
  TempDir dir("cifar10");
  write_bytes(dir.file("data_batch_1.bin"),
              concat({cifar_record({3}, 0), cifar_record({9}, 1), cifar_record({0}, 2)}));
  write_gzip(dir.file("data_batch_2.bin"), concat({cifar_record({5}, 3), cifar_record({1}, 4)}));
  const ImageSet set = read_cifar({dir.file("data_batch_1.bin"), dir.file("data_batch_2.bin")},
                                  CifarVariant::cifar10);
  ASSERT_EQ(set.size(), 5);
  EXPECT_EQ(set.channels(), 3);
  EXPECT_EQ(set.height(), 32);
  EXPECT_EQ(set.width(), 32);
  EXPECT_EQ(set.num_classes(), 10);
  EXPECT_EQ(set.labels(), (std::vector<int64_t>{3, 9, 0, 5, 1}));
  EXPECT_EQ(set.class_names().at(9), "truck");
  // CHW: channel 2, row 5, column 6 of image 4 = 4 + 14 + 5 + 6.
  EXPECT_EQ(set.image(4)[2 * 1024 + 5 * 32 + 6], 29);
}

TEST(ReadCifar, Cifar100TrainsOnTheFineLabel) {
  TempDir dir("cifar100");
  write_bytes(dir.file("train.bin"), concat({cifar_record({19, 87}, 0), cifar_record({4, 2}, 1),
                                             cifar_record({0, 99}, 2)}));
  std::string names;
  for (int i = 0; i < 100; ++i) names += "class" + std::to_string(i) + "\n";
  write_bytes(dir.file("fine_label_names.txt"), std::vector<uint8_t>(names.begin(), names.end()));
  const ImageSet set = cifar100(dir.str(), true);
  ASSERT_EQ(set.size(), 3);
  EXPECT_EQ(set.num_classes(), 100);
  EXPECT_EQ(set.labels(), (std::vector<int64_t>{87, 2, 99}));
  EXPECT_EQ(set.class_names().at(87), "class87");
  EXPECT_EQ(set.image(1)[0], 1);  // the pixels start after both label bytes
  EXPECT_EQ(set.image(2)[1024], 2 + 7);
}

TEST(ReadCifar, TruncatedRecord) {
  TempDir dir("cifartrunc");
  auto bytes = concat({cifar_record({1}, 0), cifar_record({2}, 1)});
  bytes.resize(bytes.size() - 100);
  write_bytes(dir.file("data_batch_1.bin"), bytes);
  EXPECT_TRUE(
      throws_file_error([&] { read_cifar(dir.file("data_batch_1.bin"), CifarVariant::cifar10); },
                        dir.file("data_batch_1.bin"), "truncated record"));
  // A CIFAR-10 file read as CIFAR-100 no longer divides into records either.
  write_bytes(dir.file("ten.bin"), concat({cifar_record({1}, 0), cifar_record({2}, 1)}));
  EXPECT_TRUE(throws_file_error([&] { read_cifar(dir.file("ten.bin"), CifarVariant::cifar100); },
                                dir.file("ten.bin"), "truncated record"));
  write_bytes(dir.file("empty.bin"), {});
  EXPECT_TRUE(throws_file_error([&] { read_cifar(dir.file("empty.bin"), CifarVariant::cifar10); },
                                dir.file("empty.bin"), "empty file"));
}

TEST(ReadCifar, LabelOutOfRange) {
  TempDir dir("cifarlabel");
  write_bytes(dir.file("b.bin"), concat({cifar_record({1}, 0), cifar_record({10}, 1)}));
  EXPECT_TRUE(throws_file_error([&] { read_cifar(dir.file("b.bin"), CifarVariant::cifar10); },
                                dir.file("b.bin"), "record 1: label 10 is outside [0, 10)"));
  write_bytes(dir.file("c.bin"), concat({cifar_record({25, 1}, 0)}));
  EXPECT_TRUE(throws_file_error([&] { read_cifar(dir.file("c.bin"), CifarVariant::cifar100); },
                                dir.file("c.bin"), "coarse label 25"));
}

TEST(ReadCifar, MissingFile) {
  TempDir dir("cifarmissing");
  EXPECT_TRUE(throws_file_error([&] { cifar10(dir.str(), false); }, dir.file("test_batch.bin"),
                                "no such file"));
}

// ---- image folders ------------------------------------------------------------------------------

// HWC bytes of a w x h image with pixel (y, x, c) = seed + 10 y + 3 x + 50 c.
std::vector<uint8_t> hwc_image(int width, int height, int channels, int seed) {
  std::vector<uint8_t> hwc;
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < channels; ++c)
        hwc.push_back(static_cast<uint8_t>(seed + 10 * y + 3 * x + 50 * c));
  return hwc;
}

TEST(ReadImageFolder, RgbClassesSortedAndChwLayout) {
  TempDir dir("folder");
  write_png(dir.file("zebra/1.png"), 5, 4, 3, hwc_image(5, 4, 3, 1));
  write_png(dir.file("ant/b.png"), 5, 4, 3, hwc_image(5, 4, 3, 2));
  write_png(dir.file("ant/a.png"), 5, 4, 3, hwc_image(5, 4, 3, 3));
  write_png(dir.file("ant/nested/c.png"), 5, 4, 3, hwc_image(5, 4, 3, 4));
  write_bytes(dir.file("ant/.DS_Store"), {1, 2, 3});  // hidden: skipped
  write_bytes(dir.file("README.txt"), {'h', 'i'});    // file in root: skipped
  const ImageSet set = read_image_folder(dir.str());
  ASSERT_EQ(set.size(), 4);
  EXPECT_EQ(set.num_classes(), 2);
  EXPECT_EQ(set.class_names(), (std::vector<std::string>{"ant", "zebra"}));
  EXPECT_EQ(set.labels(), (std::vector<int64_t>{0, 0, 0, 1}));
  EXPECT_EQ(set.channels(), 3);
  EXPECT_EQ(set.height(), 4);
  EXPECT_EQ(set.width(), 5);
  // Files in path order: ant/a.png (seed 3), ant/b.png (2), ant/nested/c.png (4), zebra/1.png (1).
  const int seeds[] = {3, 2, 4, 1};
  for (int i = 0; i < 4; ++i) {
    const uint8_t* image = set.image(i);  // (3, 4, 5)
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 4; ++y)
        for (int x = 0; x < 5; ++x)
          ASSERT_EQ(image[(c * 4 + y) * 5 + x], seeds[i] + 10 * y + 3 * x + 50 * c)
              << "image " << i << " (c, y, x) = " << c << ", " << y << ", " << x;
  }
}

TEST(ReadImageFolder, GrayscaleAndConversion) {
  TempDir dir("gray");
  write_png(dir.file("0/a.png"), 3, 2, 1, hwc_image(3, 2, 1, 7));
  write_png(dir.file("1/a.png"), 3, 2, 1, hwc_image(3, 2, 1, 8));
  const ImageSet gray = read_image_folder(dir.str());
  EXPECT_EQ(gray.channels(), 1);
  EXPECT_EQ(gray.image(1)[4], 8 + 10 + 3);
  const ImageSet rgb = read_image_folder(dir.str(), 3);  // gray expanded to three equal planes
  ASSERT_EQ(rgb.channels(), 3);
  for (int c = 0; c < 3; ++c) EXPECT_EQ(rgb.image(1)[c * 6 + 4], 8 + 10 + 3);
}

TEST(ReadImageFolder, MixedChannelsNeedConversion) {
  TempDir dir("mixed");
  write_png(dir.file("a/1.png"), 3, 2, 1, hwc_image(3, 2, 1, 0));
  write_png(dir.file("b/1.png"), 3, 2, 3, hwc_image(3, 2, 3, 0));
  EXPECT_TRUE(
      throws_file_error([&] { read_image_folder(dir.str()); }, dir.file("b/1.png"), "3 channels"));
  const ImageSet set = read_image_folder(dir.str(), 1);
  EXPECT_EQ(set.channels(), 1);
  EXPECT_EQ(set.size(), 2);
}

TEST(ReadImageFolder, DifferentSizes) {
  TempDir dir("sizes");
  write_png(dir.file("a/1.png"), 3, 2, 1, hwc_image(3, 2, 1, 0));
  write_png(dir.file("a/2.png"), 2, 3, 1, hwc_image(2, 3, 1, 0));
  EXPECT_TRUE(throws_file_error([&] { read_image_folder(dir.str()); }, dir.file("a/2.png"),
                                "image is 2x3 (width x height), but"));
}

TEST(ReadImageFolder, EmptyClassFolder) {
  TempDir dir("emptyclass");
  write_png(dir.file("a/1.png"), 3, 2, 1, hwc_image(3, 2, 1, 0));
  std::filesystem::create_directories(dir.str() + "/b");
  EXPECT_TRUE(throws_file_error([&] { read_image_folder(dir.str()); }, dir.str() + "/b",
                                "empty class folder"));
}

TEST(ReadImageFolder, FileThatIsNotAnImage) {
  TempDir dir("notimage");
  write_png(dir.file("a/1.png"), 3, 2, 1, hwc_image(3, 2, 1, 0));
  write_bytes(dir.file("a/2.png"), {'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'm', 'a', 'g', 'e'});
  EXPECT_TRUE(throws_file_error([&] { read_image_folder(dir.str()); }, dir.file("a/2.png"),
                                "not a decodable image"));
  auto png = test::read_bytes(dir.file("a/1.png"));
  png.resize(png.size() / 2);
  write_bytes(dir.file("a/2.png"), png);  // a cut PNG
  EXPECT_TRUE(throws_file_error([&] { read_image_folder(dir.str()); }, dir.file("a/2.png"),
                                "not a decodable image"));
}

TEST(ReadImageFolder, MissingOrEmptyRoot) {
  TempDir dir("noroot");
  EXPECT_TRUE(throws_file_error([&] { read_image_folder(dir.str() + "/none"); },
                                dir.str() + "/none", "no such folder"));
  EXPECT_TRUE(
      throws_file_error([&] { read_image_folder(dir.str()); }, dir.str(), "no class subfolders"));
  write_bytes(dir.file("f"), {1});
  EXPECT_TRUE(
      throws_file_error([&] { read_image_folder(dir.file("f")); }, dir.file("f"), "not a folder"));
}

}  // namespace
}  // namespace retort::data
