// The twin: a Verilated design that owns a pseudo-terminal, so a host program talks to it like a board.
//
// Top-level ports (fixed contract): clk, rst (active high, synchronous), uart_rx (in, idle high),
// uart_tx (out, idle high), busy (out: 1 while the design has work in progress).
//
// Usage: twin [--divisor N] [--rx-gap CYCLES] [--link PATH]
//   --divisor N       clock cycles per UART bit, both directions (default 4)
//   --rx-gap CYCLES   idle (high) cycles the host side adds after each stop bit on uart_rx (default 0)
//   --link PATH       symlink to the pty slave (replaced if it exists, removed on exit)
//
// Prints exactly one line "PTY <path>" on stdout, then nothing more there (diagnostics go to stderr).
// Bytes written to the pty are sent on uart_rx back to back; bytes the design sends on uart_tx come out
// of the pty. Sleeps in poll() while the design and both lines are idle. Exits with status 0 on SIGTERM,
// SIGINT or EOF on stdin, printing a one-line summary on stderr.
//
// Build: verilator --cc --exe --build --prefix Vtop -CFLAGS -DTWIN_TOP=Vtop design.v twin_main.cpp

#ifndef TWIN_TOP
#define TWIN_TOP Vtop
#endif
#define TWIN_STR2(x) #x
#define TWIN_STR(x) TWIN_STR2(x)
#ifndef TWIN_HEADER
#define TWIN_HEADER TWIN_STR(TWIN_TOP.h)
#endif

#include TWIN_HEADER
#include "verilated.h"

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <termios.h>
#include <unistd.h>

namespace {

volatile sig_atomic_t g_stop = 0;

void on_signal(int) { g_stop = 1; }

// Cycles between checks of the pty and stdin while the design is running.
constexpr uint64_t kCheckInterval = 512;
// Longest sleep in poll() when idle, so that signals are handled promptly even without EINTR.
constexpr int kIdleTimeoutMs = 20;
// Check stdin for EOF at most this often while running (a syscall per check).
constexpr uint64_t kStdinInterval = 1u << 16;

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "twin: %s: %s\n", what, std::strerror(errno));
    std::exit(2);
}

struct Options {
    int divisor = 4;
    int rx_gap = 0;
    std::string link;
};

long parse_int(const char* text, const char* option, long minimum) {
    char* end = nullptr;
    errno = 0;
    long value = std::strtol(text, &end, 10);
    if (errno || end == text || *end || value < minimum || value > 1000000000L) {
        std::fprintf(stderr, "twin: %s needs an integer of at least %ld, not '%s'\n", option, minimum, text);
        std::exit(2);
    }
    return value;
}

Options parse_options(int argc, char** argv) {
    Options options;
    for (int k = 1; k < argc; ++k) {
        std::string arg = argv[k];
        auto value = [&]() -> const char* {
            if (k + 1 >= argc) {
                std::fprintf(stderr, "twin: %s needs a value\n", arg.c_str());
                std::exit(2);
            }
            return argv[++k];
        };
        if (arg == "--divisor") {
            options.divisor = static_cast<int>(parse_int(value(), "--divisor", 2));
        } else if (arg == "--rx-gap") {
            options.rx_gap = static_cast<int>(parse_int(value(), "--rx-gap", 0));
        } else if (arg == "--link") {
            options.link = value();
        } else if (arg.rfind("+verilator", 0) == 0) {
            // Verilator's own runtime options: left to VerilatedContext::commandArgs.
        } else {
            std::fprintf(stderr, "twin: unknown option %s (usage: twin [--divisor N] [--rx-gap CYCLES] "
                                 "[--link PATH])\n", arg.c_str());
            std::exit(2);
        }
    }
    return options;
}

// Host -> device: queued bytes shifted onto uart_rx, `divisor` cycles per bit, then `gap` idle cycles.
// It counts as idle only `settle` cycles after its last stop bit: a design's receiver (synchroniser,
// sampling in the middle of the stop bit) raises busy a few cycles after the frame has left the line,
// and the harness must not fall asleep in between.
class RxSerialiser {
  public:
    RxSerialiser(int divisor, int gap)
        : divisor_(divisor), frame_cycles_(10 * divisor + gap), settle_(2 * divisor + 4), quiet_(settle_) {}

    std::deque<uint8_t> queue;

    bool idle() const { return !active_ && queue.empty() && quiet_ >= settle_; }

    // The line level for the next cycle.
    uint8_t next() {
        if (!active_) {
            if (queue.empty()) {
                if (quiet_ < settle_) ++quiet_;
                return 1;
            }
            frame_ = static_cast<uint16_t>((1u << 9) | (static_cast<unsigned>(queue.front()) << 1));
            queue.pop_front();
            active_ = true;
            cycle_ = 0;
        }
        int bit = cycle_ / divisor_;
        uint8_t level = bit < 10 ? static_cast<uint8_t>((frame_ >> bit) & 1) : 1;
        if (++cycle_ == frame_cycles_) {
            active_ = false;
            quiet_ = 0;
        }
        return level;
    }

  private:
    int divisor_;
    int frame_cycles_;
    int settle_;
    int quiet_;
    bool active_ = false;
    uint16_t frame_ = 0x3ff;
    int cycle_ = 0;
};

// Device -> host: a falling edge starts a frame; each bit is sampled in its middle; the stop bit must be 1.
class TxDecoder {
  public:
    explicit TxDecoder(int divisor) : divisor_(divisor) {}

    uint64_t framing_errors = 0;

    bool idle() const { return state_ == State::kIdle; }

    // Feed the line level after one clock cycle; returns true and sets `byte` when a frame completes.
    bool step(uint8_t level, uint8_t& byte) {
        switch (state_) {
        case State::kIdle:
            if (!level) {
                state_ = State::kFrame;
                cycle_ = 0;
                bit_ = 0;
                data_ = 0;
            }
            return false;
        case State::kBreak:
            if (level) state_ = State::kIdle;
            return false;
        case State::kFrame:
            break;
        }
        ++cycle_;
        if (cycle_ != bit_ * divisor_ + divisor_ / 2) return false;
        if (bit_ == 0) {
            if (level) state_ = State::kIdle;  // a glitch, not a start bit
        } else if (bit_ <= 8) {
            data_ = static_cast<uint8_t>(data_ | (level << (bit_ - 1)));
        } else {
            if (level) {
                state_ = State::kIdle;
                byte = data_;
                return true;
            }
            ++framing_errors;
            state_ = State::kBreak;
            return false;
        }
        ++bit_;
        return false;
    }

  private:
    enum class State { kIdle, kFrame, kBreak };
    int divisor_;
    State state_ = State::kIdle;
    int cycle_ = 0;
    int bit_ = 0;
    uint8_t data_ = 0;
};

class Pty {
  public:
    int master = -1;
    int slave = -1;
    std::string slave_path;

    void open_raw() {
        master = posix_openpt(O_RDWR | O_NOCTTY);
        if (master < 0) die("posix_openpt");
        if (grantpt(master) != 0) die("grantpt");
        if (unlockpt(master) != 0) die("unlockpt");
        const char* name = ptsname(master);
        if (!name) die("ptsname");
        slave_path = name;
        // Held open for the whole run: without it the master reads EIO whenever no host has the port open.
        slave = open(name, O_RDWR | O_NOCTTY);
        if (slave < 0) die("open pty slave");
        termios attributes{};
        if (tcgetattr(slave, &attributes) != 0) die("tcgetattr");
        cfmakeraw(&attributes);
        if (tcsetattr(slave, TCSANOW, &attributes) != 0) die("tcsetattr");
        int flags = fcntl(master, F_GETFL);
        if (flags < 0 || fcntl(master, F_SETFL, flags | O_NONBLOCK) != 0) die("fcntl O_NONBLOCK");
    }

    // Read whatever the host wrote; false only on an unexpected error.
    bool drain_input(std::deque<uint8_t>& queue, uint64_t& count) {
        uint8_t buffer[4096];
        for (;;) {
            ssize_t got = read(master, buffer, sizeof buffer);
            if (got > 0) {
                queue.insert(queue.end(), buffer, buffer + got);
                count += static_cast<uint64_t>(got);
                if (static_cast<size_t>(got) < sizeof buffer) return true;
                continue;
            }
            if (got < 0 && errno == EINTR) continue;
            if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EIO)) return true;
            if (got == 0) return true;
            return false;
        }
    }

    // Write as much of `pending` as the pty takes now; the rest stays for later.
    bool flush_output(std::vector<uint8_t>& pending, size_t& offset) {
        while (offset < pending.size()) {
            ssize_t put = write(master, pending.data() + offset, pending.size() - offset);
            if (put > 0) {
                offset += static_cast<size_t>(put);
                continue;
            }
            if (put < 0 && errno == EINTR) continue;
            if (put < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            return false;
        }
        if (offset == pending.size()) {
            pending.clear();
            offset = 0;
        } else if (offset > (1u << 16) && offset * 2 > pending.size()) {
            pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(offset));
            offset = 0;
        }
        return true;
    }
};

// Replace `link` with a symlink to `target` (atomically, through a temporary name).
void make_link(const std::string& link, const std::string& target) {
    std::string temporary = link + ".tmp" + std::to_string(getpid());
    unlink(temporary.c_str());
    if (symlink(target.c_str(), temporary.c_str()) != 0) die(("symlink " + temporary).c_str());
    if (rename(temporary.c_str(), link.c_str()) != 0) {
        unlink(temporary.c_str());
        die(("rename to " + link).c_str());
    }
}

// Remove `link` if it still points at `target` (another twin may have taken the name over since).
void remove_link(const std::string& link, const std::string& target) {
    char buffer[4096];
    ssize_t length = readlink(link.c_str(), buffer, sizeof buffer - 1);
    if (length < 0) return;
    buffer[length] = 0;
    if (target == buffer) unlink(link.c_str());
}

// True once stdin has reached EOF (or failed); any data on it is discarded.
bool stdin_closed(int timeout_ms) {
    pollfd entry{STDIN_FILENO, POLLIN, 0};
    int ready = poll(&entry, 1, timeout_ms);
    if (ready <= 0) return false;
    if (entry.revents & POLLNVAL) return false;  // no stdin at all: nothing to watch
    char buffer[256];
    ssize_t got = read(STDIN_FILENO, buffer, sizeof buffer);
    if (got < 0) return errno != EINTR && errno != EAGAIN;
    return got == 0;
}

}  // namespace

int main(int argc, char** argv) {
    Options options = parse_options(argc, argv);

    struct sigaction action {};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART: poll() returns EINTR
    sigaction(SIGTERM, &action, nullptr);
    sigaction(SIGINT, &action, nullptr);
    signal(SIGPIPE, SIG_IGN);

    Pty pty;
    pty.open_raw();

    auto context = std::make_unique<VerilatedContext>();
    context->commandArgs(argc, argv);
    auto top = std::make_unique<TWIN_TOP>(context.get(), "top");

    uint64_t cycles = 0;
    auto tick = [&]() {
        top->clk = 0;
        top->eval();
        top->clk = 1;
        top->eval();
        ++cycles;
    };

    top->uart_rx = 1;
    top->rst = 1;
    for (int k = 0; k < 4; ++k) tick();
    top->rst = 0;

    std::string shown = pty.slave_path;
    if (!options.link.empty()) {
        make_link(options.link, pty.slave_path);
        shown = options.link;
    }
    std::printf("PTY %s\n", shown.c_str());
    std::fflush(stdout);

    RxSerialiser rx(options.divisor, options.rx_gap);
    TxDecoder tx(options.divisor);
    std::vector<uint8_t> pending;
    size_t pending_offset = 0;
    uint64_t bytes_in = 0, bytes_out = 0;
    bool stdin_eof = false;
    const char* failure = nullptr;
    uint64_t next_stdin_check = 0;

    while (!g_stop && !stdin_eof && !failure) {
        // Run flat out between checks.
        for (uint64_t k = 0; k < kCheckInterval; ++k) {
            top->uart_rx = rx.next();
            tick();
            uint8_t byte;
            if (tx.step(top->uart_tx, byte)) {
                pending.push_back(byte);
                ++bytes_out;
            }
        }
        if (!pty.drain_input(rx.queue, bytes_in)) failure = "read from pty master";
        if (!pty.flush_output(pending, pending_offset)) failure = "write to pty master";
        if (cycles >= next_stdin_check) {
            next_stdin_check = cycles + kStdinInterval;
            if (stdin_closed(0)) stdin_eof = true;
        }
        // Sleep while nothing can happen until the host writes.
        while (!g_stop && !stdin_eof && !failure && !top->busy && rx.idle() && tx.idle() && top->uart_tx) {
            pollfd entries[2] = {
                {pty.master, static_cast<short>(POLLIN | (pending.empty() ? 0 : POLLOUT)), 0},
                {STDIN_FILENO, POLLIN, 0},
            };
            int ready = poll(entries, 2, kIdleTimeoutMs);
            if (ready < 0) {
                if (errno != EINTR) failure = "poll";
                break;
            }
            if (entries[1].revents & (POLLIN | POLLHUP | POLLERR)) stdin_eof = stdin_closed(0);
            if ((entries[0].revents & POLLOUT) && !pty.flush_output(pending, pending_offset)) {
                failure = "write to pty master";
            }
            if (entries[0].revents & POLLIN) {
                if (!pty.drain_input(rx.queue, bytes_in)) failure = "read from pty master";
            }
            // POLLHUP on the master (no host has the slave open) cannot happen: we hold the slave.
        }
    }
    if (failure) std::fprintf(stderr, "twin: %s: %s\n", failure, std::strerror(errno));

    top->final();
    if (!options.link.empty()) remove_link(options.link, pty.slave_path);
    const char* reason = failure ? "error" : g_stop ? "signal" : "stdin closed";
    std::fprintf(stderr,
                 "twin: %llu cycles simulated, %llu bytes host->device, %llu bytes device->host "
                 "(%zu unsent, %zu queued, %llu framing errors), stopped by %s\n",
                 static_cast<unsigned long long>(cycles), static_cast<unsigned long long>(bytes_in),
                 static_cast<unsigned long long>(bytes_out), pending.size() - pending_offset, rx.queue.size(),
                 static_cast<unsigned long long>(tx.framing_errors), reason);
    close(pty.slave);
    close(pty.master);
    return failure ? 1 : 0;
}
