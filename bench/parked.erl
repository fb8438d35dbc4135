%% parked.erl -- spawn N processes (N = argument 1, default 100000) that each
%% check in with main and block in `receive go`; once all N have checked in,
%% main sends go to each, receives each one's result {Pid, 1} in spawn order
%% and prints the sum (N). Same algorithm as parked.fl.
%% Run: erl -noshell +P 2000000 -run parked main N
-module(parked).
-export([main/0, main/1]).

main() -> main([]).
main(Args) ->
    N = case Args of [A | _] -> list_to_integer(A); [] -> 100000 end,
    Main = self(),
    Pids = [spawn(fun() -> Main ! parked, receive go -> Main ! {self(), 1} end end)
            || _ <- lists:seq(1, N)],
    checkin(N),
    [Pid ! go || Pid <- Pids],
    io:format("~b~n", [join(Pids, 0)]),
    halt(0).

checkin(0) -> ok;
checkin(K) -> receive parked -> checkin(K - 1) end.

join([], Sum) -> Sum;
join([Pid | Rest], Sum) -> receive {Pid, V} -> join(Rest, Sum + V) end.
