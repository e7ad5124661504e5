{
  "targets": [
    {
      "target_name": "perceiver_io",
      "sources": ["<!@(node native/scripts/build-config.cjs sources)"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native/src",
        "<!(node native/scripts/build-config.cjs openblas-include)"
      ],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "cflags_cc": ["-std=c++17", "-O3", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++14", "-std=gnu++17"],
      "libraries": [
        "<!(node native/scripts/build-config.cjs openblas-lib)",
        "-lpthread",
        "-lm",
        "-Wl,--exclude-libs,ALL"
      ]
    }
  ]
}
