%% primes.erl -- count the primes below LIMIT (argument 2, default 2000000) by
%% trial division on W processes (argument 1, default the number of
%% schedulers). Worker K tests the blocks of 1000 numbers K, K+W, K+2W, ...;
%% main joins them and prints the total. Same algorithm as primes.fl.
%% Run: erl -noshell [+S 1] -run primes main W LIMIT
-module(primes).
-export([main/0, main/1]).

main() -> main([]).
main(Args) ->
    {W, Limit} = case Args of
        [A, B | _] -> {list_to_integer(A), list_to_integer(B)};
        [A] -> {list_to_integer(A), 2000000};
        [] -> {erlang:system_info(schedulers_online), 2000000}
    end,
    Mons = [spawn_monitor(fun() -> exit({ok, worker(K * 1000, W * 1000, Limit, 0)}) end)
            || K <- lists:seq(0, W - 1)],
    io:format("~b~n", [join(Mons, 0)]),
    halt(0).

worker(Lo, _Step, Limit, Count) when Lo >= Limit -> Count;
worker(Lo, Step, Limit, Count) ->
    worker(Lo + Step, Step, Limit, block(Lo, min(Lo + 1000, Limit), Count)).

block(N, Hi, Count) when N >= Hi -> Count;
block(N, Hi, Count) ->
    case is_prime(N) of
        true -> block(N + 1, Hi, Count + 1);
        false -> block(N + 1, Hi, Count)
    end.

is_prime(N) when N < 4 -> N >= 2;
is_prime(N) when N band 1 =:= 0 -> false;
is_prime(N) -> trial(N, 3).

trial(N, D) when D * D > N -> true;
trial(N, D) when N rem D =:= 0 -> false;
trial(N, D) -> trial(N, D + 2).

join([], Sum) -> Sum;
join([{Pid, Ref} | Rest], Sum) ->
    receive {'DOWN', Ref, process, Pid, {ok, V}} -> join(Rest, Sum + V) end.
