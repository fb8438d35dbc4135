%% spawnjoin.erl -- spawn N processes (N = argument 1, default 100000); each
%% sends {self(), 2*I} to main and ends. Main receives the results in spawn
%% order (Erlang's join: the classic parallel-map idiom) and prints the sum;
%% the same algorithm as spawnjoin.fl. (spawn_monitor with the result as the
%% exit reason was about 2x slower here, OTP 25.)
%% Run: erl -noshell +P 2000000 -run spawnjoin main N
-module(spawnjoin).
-export([main/0, main/1]).

main() -> main([]).
main(Args) ->
    N = case Args of [A | _] -> list_to_integer(A); [] -> 100000 end,
    Main = self(),
    Pids = [spawn(fun() -> Main ! {self(), I * 2} end) || I <- lists:seq(0, N - 1)],
    io:format("~b~n", [join(Pids, 0)]),
    halt(0).

join([], Sum) -> Sum;
join([Pid | Rest], Sum) -> receive {Pid, V} -> join(Rest, Sum + V) end.
