%% xadd.erl -- W processes (argument 1, default the number of schedulers) each
%% add 1 to one shared counter ITERS times (argument 2, default 1000000) with
%% atomics:add/3; main joins them and prints the counter. Same algorithm as
%% xadd.fl. (There is no mutex.erl: a lock process or gen_server around a
%% counter is not how Erlang code protects shared state.)
%% Run: erl -noshell -run xadd main W ITERS
-module(xadd).
-export([main/0, main/1]).

main() -> main([]).
main(Args) ->
    {W, Iters} = case Args of
        [A, B | _] -> {list_to_integer(A), list_to_integer(B)};
        [A] -> {list_to_integer(A), 1000000};
        [] -> {erlang:system_info(schedulers_online), 1000000}
    end,
    Counter = atomics:new(1, [{signed, true}]),
    Mons = [spawn_monitor(fun() -> add(Counter, Iters), exit({ok, 0}) end)
            || _ <- lists:seq(1, W)],
    join(Mons),
    io:format("~b~n", [atomics:get(Counter, 1)]),
    halt(0).

add(_Counter, 0) -> ok;
add(Counter, K) -> atomics:add(Counter, 1, 1), add(Counter, K - 1).

join([]) -> ok;
join([{Pid, Ref} | Rest]) ->
    receive {'DOWN', Ref, process, Pid, {ok, _}} -> join(Rest) end.
