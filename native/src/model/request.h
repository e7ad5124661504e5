// What one forward (or encode / decode) call asks for, copied out of JavaScript memory.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/layers.h"

namespace perceiver {

// One input tensor: token ids (text) or float values (everything else) on the host, or float
// values already in the model's backend memory (a DeviceTensor), which the preprocessors read in
// place: no host round trip.
struct InputArray {
  std::string argument;  // how errors name it ("inputs", "inputs.image", "tensor")
  std::vector<int64_t> shape;
  std::vector<float> values;
  std::vector<int32_t> ids;
  BackendTensor resident;  // buffer set: the values live in backend memory (values stays empty)
  bool integer = false;
  bool on_backend() const { return resident.buffer != nullptr; }
  // One documented policy for NaN and Inf: rejected before any compute, so no output is ever
  // silently poisoned (see README, "Bad input"). Runs with the call, off the main thread.
  void CheckFinite() const;
  int64_t size() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

struct EncodeRequest {
  int64_t batch = 0;
  std::map<std::string, InputArray> inputs;  // "" for single-modality models, else per modality
  std::vector<uint8_t> key_mask;             // [batch, seq], 1 = attend (text); empty = all
  bool interpolate_pos_encoding = false;
  uint64_t seed = 0;  // for multimodal mask probabilities strictly between 0 and 1
  bool output_hidden_states = false;
  bool output_attentions = false;
  bool outputs_on_backend = false;  // leave every output in backend memory (DeviceTensors)
};

struct DecodeRequest {
  // Flat indices of the output points to decode, per modality ("" for single-modality decoders);
  // a modality not listed is decoded at every point.
  std::map<std::string, std::vector<int64_t>> points;
  bool output_attentions = false;
  bool outputs_on_backend = false;  // leave every output in backend memory (DeviceTensors)
};

}  // namespace perceiver
