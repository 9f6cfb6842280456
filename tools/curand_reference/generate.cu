// Reference values for nnopt's NumPy port of TIG's CUDA data generator.
//
// Built with nvcc but run entirely on the host: curand_kernel.h (from the
// nvidia-curand-cu12 wheel) is included with QUALIFIERS redefined to
// `static __forceinline__ __host__ __device__`, so the real curand_init /
// curand / curand_uniform are callable from host code. The generation code
// below copies the expressions of TIG's kernels (`generate_rff_params`,
// `generate_dataset`, `box_muller` in the neuralnet_optimizer challenge),
// one state per parameter index and per sample, run in a host loop instead
// of one CUDA thread each.
//
// Usage (all on the command line, key=value; output is JSON on stdout):
//
//   generate raw seeds=U64[,U64...] [count=8]
//       first `count` curand() u32 outputs of curand_init(seed, 0, 0) for
//       each seed, plus the first `count` curand_uniform values and the
//       first `count` TIG box_muller normals of fresh states.
//
//   generate data s64=U64 seed=TEXT profile=NAME inputs=D outputs=O
//                 [features=128] [lengthscale=0.3] [freq_power=2]
//                 [noise=0.2] [amplitude=1] [train=1000] [val=200]
//                 [test=250] [head=20] [stride=5]
//       x, f, y of the samples whose index n satisfies n < head,
//       n % stride == 0, or n is the first/last of a split; `indices`
//       lists them. stride=1 gives every sample.
//
// U64 values may be decimal or 0x-prefixed hex. freq_power selects the
// frequency scale: 2 -> 1/(l*l) (TIG's kernel), 1 -> 1/l (the spec text),
// both computed in float like the kernel.

#define QUALIFIERS static __forceinline__ __host__ __device__
#include <curand_kernel.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#ifndef M_PI
// TIG's kernels.cu has the same fallback; with glibc's <cmath> M_PI is
// already defined (as a double), which is what both nvcc builds see.
#define M_PI 3.14159265358979323846f
#endif

// ---- TIG's kernel code, as host/device functions ---------------------------

__host__ __device__ float box_muller(curandState *state, float &z1) {
    float u1, u2;
    do {
        u1 = curand_uniform(state);
    } while (u1 == 0.0f);
    u2 = curand_uniform(state);
    float mag = sqrtf(-2.0f * logf(u1));
    float z0 = mag * cosf(2.0f * M_PI * u2);
    z1 = mag * sinf(2.0f * M_PI * u2);
    return z0;
}

// generate_rff_params for one idx (= one CUDA thread).
__host__ __device__ void rff_param(unsigned long long s64, int idx,
                                   int input_dims, int k_rff, float freq_scale,
                                   float *a_params, float *b_params,
                                   float *w_params) {
    curandState state;
    curand_init(s64 + idx, 0, 0, &state);
    int out_dim = idx / k_rff;
    int k_idx = idx % k_rff;
    float z1;
    a_params[idx] = box_muller(&state, z1);
    b_params[idx] = curand_uniform(&state) * 2.0f * M_PI;
    for (int in_dim = 0; in_dim < input_dims; ++in_dim) {
        int w_idx = out_dim * k_rff * input_dims + k_idx * input_dims + in_dim;
        float z_w1;
        w_params[w_idx] = freq_scale * box_muller(&state, z_w1);
    }
}

// generate_dataset for one sample_idx (= one CUDA thread).
__host__ __device__ void dataset_sample(
    unsigned long long s64, int sample_idx, int num_samples, int input_dims,
    int output_dims, int k_rff, float scaling_factor, float noise_std,
    const float *a_params, const float *b_params, const float *w_params,
    float *out_inputs, float *out_targets_noisy, float *out_targets_true) {
    curandState state;
    curand_init(s64 + sample_idx + num_samples, 0, 0, &state);
    for (int i = 0; i < input_dims; ++i) {
        out_inputs[sample_idx * input_dims + i] =
            curand_uniform(&state) * 2.0f - 1.0f;
    }
    for (int out_dim = 0; out_dim < output_dims; ++out_dim) {
        float f_val = 0.0f;
        for (int k_idx = 0; k_idx < k_rff; ++k_idx) {
            float wx_sum = 0.0f;
            for (int in_dim = 0; in_dim < input_dims; ++in_dim) {
                float w = w_params[out_dim * k_rff * input_dims +
                                   k_idx * input_dims + in_dim];
                float x = out_inputs[sample_idx * input_dims + in_dim];
                wx_sum += w * x;
            }
            float b = b_params[out_dim * k_rff + k_idx];
            float a = a_params[out_dim * k_rff + k_idx];
            f_val += a * cosf(wx_sum + b);
        }
        f_val *= scaling_factor;
        float z_noise1;
        float noise = noise_std * box_muller(&state, z_noise1);
        out_targets_true[sample_idx * output_dims + out_dim] = f_val;
        out_targets_noisy[sample_idx * output_dims + out_dim] = f_val + noise;
    }
}

// ---- command line and JSON --------------------------------------------------

static const char *arg(int argc, char **argv, const char *key,
                       const char *fallback) {
    size_t n = strlen(key);
    for (int i = 2; i < argc; ++i) {
        if (strncmp(argv[i], key, n) == 0 && argv[i][n] == '=') {
            return argv[i] + n + 1;
        }
    }
    if (!fallback) {
        fprintf(stderr, "missing argument %s=...\n", key);
        exit(2);
    }
    return fallback;
}

static unsigned long long parse_u64(const char *s) {
    char *end;
    unsigned long long v = strtoull(s, &end, 0);
    if (*s == '\0' || *end != '\0' || *s == '-') {
        fprintf(stderr, "not an unsigned 64-bit integer: %s\n", s);
        exit(2);
    }
    return v;
}

static int parse_int(const char *s) { return (int)parse_u64(s); }

static std::string json_string(const char *s) {
    std::string out = "\"";
    for (; *s; ++s) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out += '\\';
            out += (char)c;
        } else if (c < 0x20) {
            char buf[8];
            snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += (char)c;
        }
    }
    return out + "\"";
}

// float32 with 9 significant digits: parses back to the same float.
static void print_floats(const char *name, const std::vector<float> &v,
                         bool last) {
    printf("\"%s\":[", name);
    for (size_t i = 0; i < v.size(); ++i) {
        printf(i ? ",%.9g" : "%.9g", (double)v[i]);
    }
    printf(last ? "]\n" : "],\n");
}

static int cmd_raw(int argc, char **argv) {
    int count = parse_int(arg(argc, argv, "count", "8"));
    std::string seeds = arg(argc, argv, "seeds", nullptr);
    printf("{\"generator\":\"curand XORWOW (curand_kernel.h, host build)\","
           "\"count\":%d,\"streams\":[\n", count);
    size_t start = 0;
    bool first = true;
    while (start <= seeds.size()) {
        size_t comma = seeds.find(',', start);
        if (comma == std::string::npos) comma = seeds.size();
        std::string tok = seeds.substr(start, comma - start);
        start = comma + 1;
        unsigned long long seed = parse_u64(tok.c_str());
        curandState st;
        curand_init(seed, 0, 0, &st);
        printf(first ? "{" : ",\n{");
        first = false;
        printf("\"seed_u64\":\"%llu\",\"u32\":[", seed);
        for (int i = 0; i < count; ++i) printf(i ? ",%u" : "%u", curand(&st));
        printf("],");
        curand_init(seed, 0, 0, &st);
        std::vector<float> u(count), z(count);
        for (int i = 0; i < count; ++i) u[i] = curand_uniform(&st);
        curand_init(seed, 0, 0, &st);
        for (int i = 0; i < count; ++i) {
            float z1;
            z[i] = box_muller(&st, z1);
        }
        print_floats("uniform", u, false);
        print_floats("normal", z, true);
        printf("}");
    }
    printf("\n]}\n");
    return 0;
}

static int cmd_data(int argc, char **argv) {
    unsigned long long s64 = parse_u64(arg(argc, argv, "s64", nullptr));
    const char *seed_text = arg(argc, argv, "seed", nullptr);
    const char *profile = arg(argc, argv, "profile", nullptr);
    int d = parse_int(arg(argc, argv, "inputs", nullptr));
    int o = parse_int(arg(argc, argv, "outputs", nullptr));
    int k = parse_int(arg(argc, argv, "features", "128"));
    float l = strtof(arg(argc, argv, "lengthscale", "0.3"), nullptr);
    int power = parse_int(arg(argc, argv, "freq_power", "2"));
    float noise_std = strtof(arg(argc, argv, "noise", "0.2"), nullptr);
    float amplitude = strtof(arg(argc, argv, "amplitude", "1"), nullptr);
    int n_train = parse_int(arg(argc, argv, "train", "1000"));
    int n_val = parse_int(arg(argc, argv, "val", "200"));
    int n_test = parse_int(arg(argc, argv, "test", "250"));
    int head = parse_int(arg(argc, argv, "head", "20"));
    int stride = parse_int(arg(argc, argv, "stride", "5"));
    if (power != 1 && power != 2) {
        fprintf(stderr, "freq_power must be 1 or 2\n");
        return 2;
    }
    if (stride < 1) stride = 1;
    int n = n_train + n_val + n_test;

    // As TIG's host code and kernel compute them (float32).
    float freq_scale = power == 2 ? 1.0f / (l * l) : 1.0f / l;
    float scaling_factor = amplitude * sqrtf(2.0f / (float)k);

    std::vector<float> a(o * k), b(o * k), w(o * k * d);
    for (int idx = 0; idx < o * k; ++idx) {
        rff_param(s64, idx, d, k, freq_scale, a.data(), b.data(), w.data());
    }
    std::vector<float> x(n * d), y(n * o), f(n * o);
    for (int s = 0; s < n; ++s) {
        dataset_sample(s64, s, n, d, o, k, scaling_factor, noise_std, a.data(),
                       b.data(), w.data(), x.data(), y.data(), f.data());
    }

    std::vector<int> keep;
    int edges[] = {0, n_train - 1, n_train, n_train + n_val - 1,
                   n_train + n_val, n - 1};
    for (int s = 0; s < n; ++s) {
        bool take = s < head || s % stride == 0;
        for (int e : edges) take = take || s == e;
        if (take) keep.push_back(s);
    }
    std::vector<float> xs, fs, ys;
    for (int s : keep) {
        for (int i = 0; i < d; ++i) xs.push_back(x[s * d + i]);
        for (int i = 0; i < o; ++i) {
            fs.push_back(f[s * o + i]);
            ys.push_back(y[s * o + i]);
        }
    }

    printf("{\"generator\":\"TIG generate_rff_params/generate_dataset, "
           "curand_kernel.h host build\",\n");
    printf("\"seed\":%s,\n\"s64\":\"%llu\",\n", json_string(seed_text).c_str(),
           s64);
    printf("\"profile\":{\"name\":%s,\"n_inputs\":%d,\"n_outputs\":%d,"
           "\"n_features\":%d,\"lengthscale\":%.9g,\"frequency_power\":%d,"
           "\"frequency_scale\":%.9g,\"noise_std\":%.9g,\"amplitude\":%.9g,"
           "\"scaling_factor\":%.9g,\"n_train\":%d,\"n_val\":%d,"
           "\"n_test\":%d},\n",
           json_string(profile).c_str(), d, o, k, (double)l, power,
           (double)freq_scale, (double)noise_std, (double)amplitude,
           (double)scaling_factor, n_train, n_val, n_test);
    printf("\"subset\":{\"head\":%d,\"stride\":%d},\n\"indices\":[", head,
           stride);
    for (size_t i = 0; i < keep.size(); ++i) printf(i ? ",%d" : "%d", keep[i]);
    printf("],\n");
    print_floats("x", xs, false);
    print_floats("f", fs, false);
    print_floats("y", ys, true);
    printf("}\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "raw") == 0) return cmd_raw(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "data") == 0) return cmd_data(argc, argv);
    fprintf(stderr, "usage: %s raw seeds=U64[,U64...] [count=8]\n"
                    "       %s data s64=U64 seed=TEXT profile=NAME inputs=D "
                    "outputs=O [key=value...]\n",
            argv[0], argv[0]);
    return 2;
}
