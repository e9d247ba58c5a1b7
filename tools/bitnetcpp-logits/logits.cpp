// Prints bitnet.cpp's own logits for a token sequence and its greedy continuation as JSON, so that
// tests can compare our forward pass on a bitnet.cpp-made GGUF with bitnet.cpp's.
//
// Built against bitnet.cpp 1.0's libllama (llama.h API of its llama.cpp fork, 2024-10); see
// tools/reference/bitnetcpp_fixture.sh. Usage: logits MODEL.gguf ID,ID,... N_GREEDY
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

static int argmax(const float * v, int n) {
    int best = 0;
    for (int i = 1; i < n; ++i) {
        if (v[i] > v[best]) best = i;
    }
    return best;
}

int main(int argc, char ** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: %s MODEL.gguf ID,ID,... N_GREEDY\n", argv[0]);
        return 2;
    }
    std::vector<llama_token> tokens;
    std::stringstream ids(argv[2]);
    for (std::string id; std::getline(ids, id, ',');) tokens.push_back(std::atoi(id.c_str()));
    const int n_greedy = std::atoi(argv[3]);

    llama_backend_init();
    llama_model * model = llama_load_model_from_file(argv[1], llama_model_default_params());
    if (!model) return 1;
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 256;
    cp.n_batch = 256;
    cp.n_threads = cp.n_threads_batch = 1;
    llama_context * ctx = llama_new_context_with_model(model, cp);
    const int n_vocab = llama_n_vocab(model);

    llama_batch batch = llama_batch_init(256, 0, 1);
    for (size_t i = 0; i < tokens.size(); ++i) {
        batch.token[i] = tokens[i];
        batch.pos[i] = (llama_pos) i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = (int32_t) tokens.size();
    if (llama_decode(ctx, batch) != 0) return 1;

    std::printf("{\"logits\": [");
    for (size_t i = 0; i < tokens.size(); ++i) {
        const float * l = llama_get_logits_ith(ctx, (int32_t) i);
        std::printf("%s[", i ? ", " : "");
        for (int v = 0; v < n_vocab; ++v) std::printf("%s%.6g", v ? ", " : "", l[v]);
        std::printf("]");
    }
    std::printf("], \"greedy\": [");
    int next = argmax(llama_get_logits_ith(ctx, (int32_t) tokens.size() - 1), n_vocab);
    llama_pos pos = (llama_pos) tokens.size();
    for (int g = 0; g < n_greedy; ++g) {
        std::printf("%s%d", g ? ", " : "", next);
        if (g + 1 == n_greedy) break;
        batch.token[0] = next;
        batch.pos[0] = pos++;
        batch.n_seq_id[0] = 1;
        batch.seq_id[0][0] = 0;
        batch.logits[0] = 1;
        batch.n_tokens = 1;
        if (llama_decode(ctx, batch) != 0) return 1;
        next = argmax(llama_get_logits_ith(ctx, 0), n_vocab);
    }
    std::printf("]}\n");
    llama_batch_free(batch);
    llama_free(ctx);
    llama_free_model(model);
    return 0;
}
