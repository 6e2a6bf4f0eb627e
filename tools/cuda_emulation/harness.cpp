// ctypes entry point for the emulated kernels: emu_launch_kernel(name, grid, block, argv) calls the kernel
// ``name`` with argv[i] pointing at its i-th argument, as cuLaunchKernel's kernelParams do.
#include <cstring>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "masks.cu"
#include "combine.cu"
#include "activations.cu"

namespace {
using Launcher = void (*)(unsigned, unsigned, void**);

template <typename... A, std::size_t... I>
void call_with(void (*kernel)(A...), unsigned grid, unsigned block, void** argv, std::index_sequence<I...>) {
    std::tuple<std::decay_t<A>...> args{*static_cast<std::decay_t<A>*>(argv[I])...};
    emu_launch(grid, block, [&] { std::apply(kernel, args); });
}

template <typename... A>
void call(void (*kernel)(A...), unsigned grid, unsigned block, void** argv) {
    call_with(kernel, grid, block, argv, std::index_sequence_for<A...>{});
}

template <auto Kernel>
void launcher(unsigned grid, unsigned block, void** argv) {
    call(Kernel, grid, block, argv);
}

const std::unordered_map<std::string, Launcher>& kernels() {
    static const std::unordered_map<std::string, Launcher> table{
        {"mask_item_ranges", &launcher<&mask_item_ranges>},
        {"masked_inputs_f32", &launcher<&masked_inputs_f32>},
        {"masked_inputs_f16", &launcher<&masked_inputs_f16>},
        {"accumulate_scores", &launcher<&accumulate_scores>},
        {"weighted_sum", &launcher<&weighted_sum>},
        {"gated_weighted_sum", &launcher<&gated_weighted_sum>},
        {"resize_maps", &launcher<&resize_maps>},
        {"finish_maps", &launcher<&finish_maps>},
        {"ablate_channels", &launcher<&ablate_channels>},
        {"keep_positions", &launcher<&keep_positions>},
    };
    return table;
}
}  // namespace

extern "C" int emu_launch_kernel(const char* name, unsigned grid, unsigned block, void** argv) {
    auto it = kernels().find(name);
    if (it == kernels().end()) return 1;
    it->second(grid, block, argv);
    return 0;
}
