{
  "variables": {
    "perceiver_cuda%": "<!(node native/scripts/build-config.cjs cuda-enabled)"
  },
  "targets": [
    {
      "target_name": "perceiver_io",
      "sources": ["<!@(node native/scripts/build-config.cjs sources)"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native/src"
      ],
      # NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS: a JavaScript exception that cannot be thrown because
      # the environment is being torn down (a worker thread ending mid-call) is dropped instead of
      # escaping as a C++ exception, which would abort the process.
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "cflags_cc": ["-std=c++17", "-O3", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++14", "-std=gnu++17"],
      "libraries": [
        "-lpthread",
        "-lm",
        "-Wl,--exclude-libs,ALL",
        # Never unloaded: the engine's thread pool outlives the worker thread
        # that first loaded the addon, and Node unloads a worker's addons when it ends.
        "-Wl,-z,nodelete"
      ],
      "conditions": [
        ["perceiver_cuda==1", {
          "include_dirs": ["<!(node native/scripts/build-config.cjs cuda-include)"],
          "libraries": ["<!(node native/scripts/build-config.cjs cuda-lib-dir)/libcudart_static.a", "-ldl", "-lrt"],
          # One make target per .cu file (gyp writes a rule per input), so `make -j` (node-gyp --jobs,
          # which scripts/install.cjs passes) compiles them together; the C++ objects wait for them.
          "rules": [
            {
              "rule_name": "nvcc",
              "extension": "cu",
              # Every project header a .cu includes, transitively (build-config.cjs scans them): gyp
              # tracks no header dependencies of a rule, so without this list a change to a shared
              # .cuh or to backend.h would not recompile the kernels.
              "inputs": ["<!@(node native/scripts/build-config.cjs cuda-headers)"],
              "outputs": ["<(INTERMEDIATE_DIR)/cuda/<(RULE_INPUT_ROOT).o"],
              "action": [
                "<!(node native/scripts/build-config.cjs nvcc)",
                "<!@(node native/scripts/build-config.cjs nvcc-flags)",
                "-c", "<(RULE_INPUT_PATH)",
                "-o", "<(INTERMEDIATE_DIR)/cuda/<(RULE_INPUT_ROOT).o"
              ],
              "message": "NVCC <(RULE_INPUT_PATH)",
              "process_outputs_as_sources": 1
            }
          ]
        }]
      ]
    }
  ]
}
